"""One process of the shared-pacing tests (tests/test_pacing.py): calls a
route of the emulator from several threads for a while, paced by the shared
budget in Redis (or, with --alone, by its own pacer), and prints what it saw
as JSON. Autumn's retries are off, so a 429 is seen, not hidden."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter

import django
from django.conf import settings

settings.configure(DATABASES={}, INSTALLED_APPS=[], USE_TZ=True)
django.setup()

from autumn_django import conf, contract  # noqa: E402
from autumn_django.client import AutumnClient  # noqa: E402
from autumn_django.exceptions import AutumnError  # noqa: E402
from autumn_django.pacing import LocalPacer, SharedPacer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--redis")
    parser.add_argument("--scope", default="test")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to start at")
    options = parser.parse_args()
    limits = conf.rate_limits("2.1")
    pacer = (
        SharedPacer(options.redis, limits, scope=options.scope, ceilings=conf.autumn_limits("2.1"))
        if options.redis
        else LocalPacer(limits)
    )
    client = AutumnClient(options.key, base_url=options.url, max_retries=0, pacer=pacer, pacing_wait=None)
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    delay = options.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    stop = time.monotonic() + options.seconds

    def work(number: int) -> None:
        while time.monotonic() < stop:
            try:
                client.update_customer(f"c{number}", name=f"n{time.monotonic()}")
                outcome = "ok"
            except AutumnError as error:
                outcome = str(getattr(error, "status", None) or type(error).__name__)
            with lock:
                seen[outcome] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(options.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"seen": seen, "route": contract.UPDATE}))


if __name__ == "__main__":
    main()
