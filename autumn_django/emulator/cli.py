"""The emulator's command line, shared by ``python -m autumn_django.emulator``
and ``manage.py autumn_emulator``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .. import contract
from .core import Emulator, Plan
from .server import EmulatorServer
from .webhooks import SVIX_SCHEDULE, check_url, make_webhook_secret, signer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to bind (default 8787; 0 picks one)")
    parser.add_argument(
        "--secret-key",
        action="append",
        dest="secret_keys",
        metavar="KEY",
        help="accept only this key (repeat for more); default: any well-formed am_sk_test_/am_sk_live_ key",
    )
    parser.add_argument(
        "--api-version",
        default=contract.DEFAULT_API_VERSION,
        help="version for requests without an x-api-version header (default %(default)s)",
    )
    parser.add_argument(
        "--plan", action="append", default=[], metavar="ID", help="a plan that exists (repeat)"
    )
    parser.add_argument(
        "--default-plan",
        action="append",
        default=[],
        metavar="ID",
        help="a plan attached to every new customer (repeat)",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="added delay per request")
    parser.add_argument(
        "--latency-jitter-ms", type=float, default=0, help="vary the delay by up to this much either way"
    )
    parser.add_argument("--rate-limits", action="store_true", help="enforce Autumn's published rate limits")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="answer this fraction of requests with a 503 (0 to 1)",
    )
    parser.add_argument("--data", metavar="FILE", help="keep customers in this JSON file across restarts")
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="send billing events here, signed and retried as Svix does (only to this URL)",
    )
    parser.add_argument(
        "--webhook-secret",
        metavar="whsec_...",
        help="the webhook signing secret (default: a new one, printed at start)",
    )
    parser.add_argument(
        "--webhook-speedup",
        type=float,
        default=1000,
        metavar="N",
        help="Svix's retry schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) divided by N "
        "(default %(default)g; 1 for the real one)",
    )


def build_emulator(options: argparse.Namespace) -> Emulator:
    if not 0 <= options.fail_rate <= 1:
        raise SystemExit("--fail-rate must be between 0 and 1")
    if contract.parse_api_version(options.api_version) is None:
        raise SystemExit(f"--api-version {options.api_version!r} is not an Autumn API version")
    url = getattr(options, "webhook_url", None)
    secret = getattr(options, "webhook_secret", None)
    speedup = getattr(options, "webhook_speedup", 1000)
    if secret is not None and url is None:
        raise SystemExit("--webhook-secret needs --webhook-url")
    if url is not None:
        secret = secret or make_webhook_secret()
        options.webhook_secret = secret
        try:
            check_url(url)
        except ValueError as problem:
            raise SystemExit(f"--webhook-url: {problem}") from None
        try:
            signer(secret)
        except ValueError as problem:
            raise SystemExit(f"--webhook-secret: {problem}") from None
    if not speedup > 0:
        raise SystemExit("--webhook-speedup must be more than 0")
    return Emulator(
        secret_keys=options.secret_keys,
        default_api_version=options.api_version,
        plans=[Plan(plan_id) for plan_id in options.plan],
        default_plans=options.default_plan,
        rate_limits=options.rate_limits,
        latency_ms=options.latency_ms,
        latency_jitter_ms=options.latency_jitter_ms,
        fail_rate=options.fail_rate,
        data_file=options.data,
        webhook_url=url,
        webhook_secret=secret,
        webhook_schedule=[wait / speedup for wait in SVIX_SCHEDULE],
    )


def serve(options: argparse.Namespace, out: Any = sys.stdout) -> None:
    """Run until interrupted, then save the data file."""
    server = EmulatorServer(build_emulator(options), options.host, options.port)
    keys = "the given keys" if options.secret_keys else "any well-formed am_sk_test_/am_sk_live_ key"
    out.write(
        f"Autumn emulator at {server.url} (accepts {keys}; API {options.api_version} when no "
        f"x-api-version is sent{'; rate limits on' if options.rate_limits else ''}). "
        "Ctrl-C stops it.\n"
    )
    if getattr(options, "webhook_url", None):
        out.write(f"Webhooks to {options.webhook_url}, signed with {options.webhook_secret}\n")
    out.flush()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGINT stops it even where a shell ignores it (a job started in
        # the background), and SIGTERM saves the data file too.
        for stop in (signal.SIGINT, signal.SIGTERM):
            previous[stop] = signal.getsignal(stop)
            signal.signal(stop, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.emulator.close()
        for stop, handler in previous.items():
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m autumn_django.emulator",
        description="A local emulator of Autumn's customers API (and billing.attach, with webhooks).",
    )
    add_arguments(parser)
    serve(parser.parse_args(argv))
