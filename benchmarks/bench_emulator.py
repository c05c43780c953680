"""How many requests a second the HTTP emulator serves on this machine.

Runs, in one process and one run:
1. a baseline: the same threaded HTTP server answering a fixed 200 ``{}``
   (what Python's http.server costs with no Autumn logic at all);
2. the emulator serving ``customers.get_or_create`` of new and existing
   customers, then ``customers.list`` pages of 10;
and prints each rate with its ratio to the baseline. The load comes from
separate processes over keep-alive connections, as pooled clients would
send it; in one process the clients would compete with the server for the GIL.

    python benchmarks/bench_emulator.py [--requests 6000] [--clients 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autumn_django.emulator import Emulator, EmulatorServer  # noqa: E402
from autumn_django.emulator.server import _Handler  # noqa: E402

KEY = "am_sk_test_" + "bench".ljust(42, "0")  # the same in every process


class _Baseline(_Handler):
    def _serve(self) -> None:  # type: ignore[override]
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = _serve


def _client(url: str, route: str, body_kind: str, index: int, count: int) -> int:
    """One load process: ``count`` requests over one keep-alive connection,
    with http.client (lighter than requests, so the server is what is timed)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    headers = {"Authorization": f"Bearer {KEY}", "x-api-version": "2.1", "Content-Type": "application/json"}
    failures = 0
    for number in range(count):
        if body_kind == "new":
            body = {
                "customer_id": f"t{index}-{number}",
                "name": f"User {number}",
                "email": f"u{index}-{number}@example.com",
            }
        elif body_kind == "existing":
            body = {"customer_id": f"t{index}-{number}"}
        elif body_kind == "list":
            body = {"limit": 10, "offset": number % 50}
        else:
            body = {}
        connection.request("POST", f"/v1/{route}", json.dumps(body), headers)
        answer = connection.getresponse()
        answer.read()
        failures += answer.status != 200
    connection.close()
    return failures


def run(pool: ProcessPoolExecutor, url: str, route: str, body_kind: str, total: int, clients: int) -> float:
    """Requests a second for ``total`` requests from ``clients`` processes."""
    per_client = total // clients
    started = time.perf_counter()
    futures = [pool.submit(_client, url, route, body_kind, index, per_client) for index in range(clients)]
    failures = sum(future.result() for future in futures)
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} requests to {route} failed")
    return per_client * clients / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=2, help="load processes (default 2)")
    options = parser.parse_args()
    total, clients = options.requests, options.clients

    with ProcessPoolExecutor(clients) as pool:
        list(pool.map(abs, range(clients)))  # start the processes before timing
        baseline_server = EmulatorServer(Emulator())
        baseline_server.RequestHandlerClass = _Baseline
        with baseline_server:
            baseline = run(pool, baseline_server.url, "customers.get_or_create", "none", total, clients)
        with EmulatorServer(Emulator()) as server:
            create = run(pool, server.url, "customers.get_or_create", "new", total, clients)
            existing = run(pool, server.url, "customers.get_or_create", "existing", total, clients)
            listing = run(pool, server.url, "customers.list", "list", total, clients)
            customers = len(server.emulator.customers())

    print(
        f"HTTP emulator throughput on {os.cpu_count()} cores: {clients} load processes, "
        f"keep-alive, {total} requests a run"
    )
    print(f"  baseline: bare threaded http.server, fixed 200 {{}}: {baseline:8.0f} req/s  (1.00)")
    for label, rate in (
        ("get_or_create, new customers", create),
        ("get_or_create, existing customers", existing),
        (f"list, pages of 10 over {customers} customers", listing),
    ):
        print(f"  {label:<43} {rate:8.0f} req/s  ({rate / baseline:.2f} of baseline)")


if __name__ == "__main__":
    main()
