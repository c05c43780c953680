"""autumn_sync against a naive loop, at Autumn-like latency, in one run.

Creates N users (default 10,000) in a scratch SQLite database, starts the
HTTP emulator in its own process with added latency (default 20 ms a
request), and measures:

1. a naive baseline: a sequential loop of get_or_create, one plain
   requests.Session, timed on a sample (at least 1,000 users) and scaled
   linearly to N (said so in the output);
2. autumn_sync's initial run (client-side rate limits off), and the ratio
   baseline / ours;
3. a rate-limited update run: the emulator restarted with Autumn's real
   limits (data kept), 1,000 users' emails changed, autumn_sync with its
   default pacing; updates are capped at 25/s, so the bound is 40 s;
4. a re-run with nothing changed (must make no write call);
5. for each: duration, API calls, 429 answers, peak RSS growth, SQL queries.

It prints a table and writes it as JSON.

    python benchmarks/bench_sync.py [--users 10000] [--latency-ms 20] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY = "am_sk_test_" + "benchmark".ljust(42, "0")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def start_emulator(data: Path, latency_ms: float, rate_limits: bool) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "autumn_django.emulator", "--port", "0", "--data", str(data),
               "--latency-ms", str(latency_ms)]  # fmt: skip
    if rate_limits:
        command.append("--rate-limits")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().split(" at ")[1].split(" ")[0]
    return process, url


def stop_emulator(process: subprocess.Popen[str]) -> None:
    process.send_signal(subprocess.signal.SIGINT)
    process.wait(timeout=60)


def configure(database: Path) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="benchmark",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "autumn_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        AUTUMN={"SECRET_KEY": KEY, "BASE_URL": "http://127.0.0.1:9"},
    )
    django.setup()


def emulator_statuses(url: str) -> dict[str, int]:
    import requests

    return requests.get(f"{url}/_emulator/stats", timeout=10).json()["statuses"]


def measure(label: str, url: str, args: list[str], rate_limits: bool) -> dict[str, object]:
    """One autumn_sync run: duration, calls, 429s, memory, queries."""
    from django.conf import settings
    from django.core.management import call_command
    from django.core.signals import setting_changed
    from django.db import connection

    settings.AUTUMN = {
        "SECRET_KEY": KEY, "BASE_URL": url, **({} if rate_limits else {"RATE_LIMITS": False}),
    }  # fmt: skip
    # The app keeps a validated snapshot of AUTUMN until it hears of a change
    # (as override_settings makes it): say so, or the run reads the old one.
    setting_changed.send(sender=type(settings), setting="AUTUMN", value=settings.AUTUMN, enter=True)
    queries = [0]

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        queries[0] += 1
        return execute(sql, params, many, context)

    before_statuses = emulator_statuses(url)
    rss_before = rss_mb()
    out = io.StringIO()
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        call_command("autumn_sync", "--json", "--no-fail-on-error", *args, stdout=out, stderr=io.StringIO())
    duration = time.perf_counter() - started
    summary = json.loads(out.getvalue())
    after = emulator_statuses(url)
    answered = {key: after.get(key, 0) - before_statuses.get(key, 0) for key in after}
    writes = sum(
        count
        for route, count in summary["api_calls"].items()
        if route not in ("customers.list", "customers.get")
    )
    return {
        "run": label,
        "seconds": round(duration, 2),
        "users_per_second": None,
        "created": summary["created"],
        "updated": summary["updated"],
        "unchanged": summary["unchanged"],
        "failed": summary["failed"],
        "api_calls": summary["api_calls"],
        "write_calls": writes,
        "answers_429": sum(n for key, n in answered.items() if key.endswith(" 429")),
        "answers_total": sum(answered.values()),
        "peak_rss_growth_mb": round(rss_mb() - rss_before, 1),
        "sql_queries": queries[0],
    }


def baseline(url: str, users: list[int], sample: int) -> dict[str, object]:
    """What a site would write by hand: one request after another."""
    import requests

    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {KEY}", "x-api-version": "2.1"})
    picked = users[:sample]
    started = time.perf_counter()
    for pk in picked:
        answer = session.post(
            f"{url}/v1/customers.get_or_create",
            json={"customer_id": f"naive-{pk}", "name": f"User {pk}", "email": f"naive{pk}@example.com"},
        )
        answer.raise_for_status()
    per_user = (time.perf_counter() - started) / len(picked)
    return {"run": "naive baseline", "sample": len(picked), "seconds_per_user": per_user,
            "seconds": round(per_user * len(users), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--changed", type=int, default=1000, help="users changed for the rate-limited run")
    parser.add_argument("--sample", type=int, default=1000, help="users timed for the naive baseline")
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "bench_sync.json"))
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="autumn-bench-"))
    configure(scratch / "db.sqlite3")
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from autumn_django.signals import disable_sync

    call_command("migrate", verbosity=0)
    User = get_user_model()
    with disable_sync():
        for start in range(0, options.users, 5000):
            User.objects.bulk_create(
                User(username=f"user{n}", email=f"user{n}@example.com", first_name=f"User {n}")
                for n in range(start, min(start + 5000, options.users))
            )
    pks = list(User.objects.order_by("pk").values_list("pk", flat=True))
    data = scratch / "emulator.json"
    concurrency = ["--concurrency", str(options.concurrency)]

    process, url = start_emulator(data, options.latency_ms, rate_limits=False)
    try:
        naive = baseline(url, pks, min(options.sample, len(pks)))
        initial = measure("initial autumn_sync (rate limits off)", url, concurrency, rate_limits=False)
        rerun = measure("re-run, nothing changed", url, concurrency, rate_limits=True)
    finally:
        stop_emulator(process)
    changed = pks[: options.changed]
    with disable_sync():
        User.objects.filter(pk__in=changed).update(email="changed@example.com")
    process, url = start_emulator(data, options.latency_ms, rate_limits=True)
    try:
        limited = measure(f"rate-limited: {len(changed)} emails changed", url, concurrency, rate_limits=True)
    finally:
        stop_emulator(process)

    for row in (initial, rerun, limited):
        done = int(row["created"]) + int(row["updated"]) + int(row["unchanged"])  # type: ignore[call-overload]
        row["users_per_second"] = round(done / float(row["seconds"]), 1)  # type: ignore[arg-type]
    speedup = float(naive["seconds"]) / float(initial["seconds"])  # type: ignore[arg-type]
    bound = len(changed) / 25
    result = {
        "users": options.users,
        "latency_ms": options.latency_ms,
        "concurrency": options.concurrency,
        "cores": os.cpu_count(),
        "naive_baseline": naive,
        "runs": [initial, rerun, limited],
        "speedup_over_naive": round(speedup, 1),
        "rate_limited_bound_seconds": bound,
        "rate_limited_over_bound": round(float(limited["seconds"]) / bound, 2),  # type: ignore[arg-type]
    }
    Path(options.json_out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"autumn_sync benchmark: {options.users} users, {options.latency_ms:g} ms latency, "
          f"--concurrency {options.concurrency}, {os.cpu_count()} cores")  # fmt: skip
    print(
        f"naive baseline: {naive['seconds_per_user'] * 1000:.1f} ms/user measured on {naive['sample']} "  # type: ignore[operator]
        f"users, scaled linearly to {options.users}: {naive['seconds']} s"
    )
    columns = [("run", "run", 38), ("seconds", "s", 8), ("users_per_second", "users/s", 8),
               ("write_calls", "writes", 7), ("answers_429", "429s", 5), ("failed", "failed", 6),
               ("peak_rss_growth_mb", "RSS+MB", 7), ("sql_queries", "SQL", 6)]  # fmt: skip
    print(
        " ".join(
            f"{title:<{width}}" if key == "run" else f"{title:>{width}}" for key, title, width in columns
        )
    )
    for row in (initial, rerun, limited):
        print(
            " ".join(
                f"{row[key]!s:<{width}}" if key == "run" else f"{row[key]!s:>{width}}"
                for key, _, width in columns
            )
        )
    print(f"initial run vs naive baseline: {speedup:.1f}x faster")
    print(f"rate-limited run: {limited['seconds']} s against a {bound:.0f} s bound "
          f"({result['rate_limited_over_bound']}x), {limited['answers_429']} of "
          f"{limited['answers_total']} answers were 429")  # fmt: skip
    print(f"written to {options.json_out}")


if __name__ == "__main__":
    main()
