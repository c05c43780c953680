"""How fast the webhook endpoint takes deliveries, and how long an event
takes to reach the mirror. Everything over real HTTP, to real processes.

1. Throughput: signed ``billing.updated`` deliveries (distinct svix-ids,
   ~1 KB bodies, signed as Svix signs them) POSTed to /autumn/webhooks/ of
   the example site served by ``manage.py runserver --noreload``, single
   threaded (``--nothreading``: one request at a time, a new connection
   each) and threaded (keep-alive, a thread per connection), on SQLite and
   on PostgreSQL, from 1 and from 4 client processes. The endpoint only
   receives and stores here: the site's task backend is django-tasks-db's
   DatabaseBackend with no worker running, so each new event costs its
   verify, its WebhookEvent row and its task row, and no processing.
   Beside it, in the same server process and the same run: a trivial view
   (same decorators, same body read, same JSON answer: the baseline, so
   the ratio is what verifying and storing cost), a repeated delivery (the
   same svix-ids again: the dedupe path) and a refused one (signed with
   another secret: 400, nothing stored).
2. Latency: the emulator (served over HTTP, as Autumn) attaches a plan and
   sends its events to the site; the time until the site's mirror row shows
   the plan (``CustomerPlan`` active), and until the emulator had its 200,
   with the processing task on the ImmediateBackend (processed in the
   request, before the answer) and on the database backend with a real
   ``db_worker`` process (at its default ``--interval 1`` and at 0.1 s).

Each throughput figure is the best of ``--rounds`` rounds (the four kinds
one after the other in each), beside the server process's CPU time a
delivery (from /proc: steadier than a rate when other work shares the
machine). A latency trial waits for both events to be processed, then
pauses for a share of the worker's interval (spread evenly over it), so the
event arrives at any moment of the worker's sleep.

The load comes from separate processes (one keep-alive connection each,
http.client), as in bench_emulator.py. The site's settings (written to a
temporary directory): DEBUG off, no access log, persistent database
connections (CONN_MAX_AGE 60), SQLite in WAL mode with IMMEDIATE
transactions and a 20 s busy timeout (with Django's defaults, 4 concurrent
deliveries get "database is locked" 500s), and Nagle off on runserver's
sockets (it writes an answer in three pieces: on a kept-alive connection
that costs 40 ms an answer, ~22 answers a second, whatever the view).
PostgreSQL is 127.0.0.1:5432, trust auth (AUTUMN_TEST_PG_HOST/PORT/USER/
PASSWORD/NAME as for the test suite); a database of this run's own is
created and dropped. Without PostgreSQL its part is skipped with the reason.

    python benchmarks/bench_webhooks.py [--events 200] [--rounds 3] [--trials 20] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autumn_django.emulator.webhooks import make_webhook_secret, signer, svix_headers  # noqa: E402

PG: dict[str, Any] = {
    "host": os.environ.get("AUTUMN_TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("AUTUMN_TEST_PG_PORT", "5432")),
    "user": os.environ.get("AUTUMN_TEST_PG_USER", "postgres"),
    "password": os.environ.get("AUTUMN_TEST_PG_PASSWORD", ""),
    "dbname": os.environ.get("AUTUMN_TEST_PG_NAME", "test"),  # only to create ours
}
WEBHOOK_PATH = "/autumn/webhooks/"
TRIVIAL_PATH = "/bench/trivial/"

# The site: the example project's settings with the database, the task
# backend and the secrets of this run, read from BENCH_* variables so that
# runserver, db_worker, migrate and the latency process share them.
SETTINGS = """
import os

import django

from example_project.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench_site_urls"
INSTALLED_APPS = [  # noqa: F405
    *INSTALLED_APPS,  # noqa: F405
    *(app for app in ("django_tasks", "django_tasks_db") if app not in INSTALLED_APPS),  # noqa: F405
]
if os.environ["BENCH_DB"] == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["BENCH_PG_HOST"],
            "PORT": os.environ["BENCH_PG_PORT"],
            "USER": os.environ["BENCH_PG_USER"],
            "PASSWORD": os.environ["BENCH_PG_PASSWORD"],
            "NAME": os.environ["BENCH_DB_NAME"],
            "CONN_MAX_AGE": 60,
        }
    }
else:
    # WAL (set on the file), IMMEDIATE transactions and a busy timeout: the
    # settings Django's docs give for SQLite under concurrent writes.
    _options = {"timeout": 20}
    if django.VERSION >= (5, 1):
        _options["transaction_mode"] = "IMMEDIATE"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["BENCH_DB_NAME"],
            "OPTIONS": _options,
            "CONN_MAX_AGE": 60,
        }
    }
_TASKS = "django_tasks" if django.VERSION < (6, 0) else "django.tasks"
TASKS = {
    "default": {
        "BACKEND": {
            "db": "django_tasks_db.DatabaseBackend",
            "immediate": _TASKS + ".backends.immediate.ImmediateBackend",
        }[os.environ.get("BENCH_TASKS", "db")]
    }
}
AUTUMN = {
    **AUTUMN,  # noqa: F405
    "SECRET_KEY": EMULATOR_SECRET_KEY,  # noqa: F405
    "BASE_URL": os.environ.get("BENCH_AUTUMN_URL") or "http://127.0.0.1:9",
    "WEBHOOK_SECRETS": [os.environ["BENCH_WEBHOOK_SECRET"]],
}
# runserver writes an answer's status line, headers and body in three
# send()s; on a kept-alive connection Nagle holds the later ones until the
# client's delayed ACK, 40 ms an answer. Production servers send them
# together; so does runserver here, with Nagle off on its sockets.
from django.core.servers import basehttp  # noqa: E402

basehttp.WSGIRequestHandler.disable_nagle_algorithm = True
# No access log: runserver would print a line a request to stderr.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.server": {"handlers": [], "level": "ERROR", "propagate": False},
        "autumn_django": {"handlers": ["console"], "level": "WARNING"},
    },
}
"""

URLS = '''
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def trivial(request):
    """The baseline: what the webhook view does, less verifying and storing."""
    request.body
    return JsonResponse({"received": True, "duplicate": False})


urlpatterns = [
    path("bench/trivial/", trivial),
    path("autumn/", include("autumn_django.urls")),
]
'''


# --- the deliveries -----------------------------------------------------------


def event_body(customer_id: str) -> str:
    """A ``billing.updated`` as Autumn sends an upgrade: the old plan expired,
    the new one activated, the previous attributes; about 1 KB."""
    now = 1_790_000_000_000
    month = 30 * 86_400_000

    def subscription(plan_id: str, status: str, started: int, **changes: Any) -> dict[str, Any]:
        return {
            "id": f"cus_prod_{plan_id}_{customer_id}"[:40],
            "plan_id": plan_id,
            "status": status,
            "past_due": False,
            "add_on": False,
            "quantity": 1,
            "started_at": started,
            "canceled_at": None,
            "expires_at": None,
            "trial_ends_at": None,
            "current_period_start": started,
            "current_period_end": started + month,
            **changes,
        }

    data = {
        "customer_id": customer_id,
        "entity_id": None,
        "plan_changes": [
            {
                "action": "expired",
                "subscription": subscription(
                    "starter", "expired", now - month, canceled_at=now, expires_at=now
                ),
            },
            {"action": "activated", "subscription": subscription("pro", "active", now)},
        ],
        "previous_attributes": {"plan_id": "starter", "status": "active", "current_period_end": now},
        "tags": ["upgrade", "checkout"],
    }
    return json.dumps({"type": "billing.updated", "data": data}, separators=(",", ":"))


def _client(
    base_url: str, kind: str, tag: str, index: int, count: int, secret: str, start_at: float
) -> tuple[float, float, int, str]:
    """One load process: ``count`` deliveries over one keep-alive connection
    (the single-threaded server closes it after each answer; http.client
    opens the next). All are signed before ``start_at`` (wall time, the same
    in every client), so the timed part is only sending and reading.
    Returns (when it began and finished, how many answers were wrong, the
    first of them)."""
    import http.client
    from urllib.parse import urlsplit

    key = signer(secret)
    path = TRIVIAL_PATH if kind == "trivial" else WEBHOOK_PATH
    expect_status, expect_text = {
        "trivial": (200, b""),
        "new": (200, b'"duplicate": false'),
        "repeat": (200, b'"duplicate": true'),
        "refused": (400, b"signature"),
    }[kind]
    requests = []
    for number in range(count):
        message_id = f"msg_{tag}_{index}_{number}"
        text = event_body(f"user_{index}_{number:06d}")
        requests.append((svix_headers(key, message_id, int(time.time()), text), text.encode()))
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    wrong, first_wrong = 0, ""
    time.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    for headers, body in requests:
        connection.request("POST", path, body, headers)
        answer = connection.getresponse()
        answered = answer.read()
        if answer.status != expect_status or expect_text not in answered:
            wrong += 1
            first_wrong = first_wrong or f"{answer.status} {answered[:200]!r}"
    finished = time.time()
    connection.close()
    return began, finished, wrong, first_wrong


# --- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def process(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A manage.py command in the background, its output in ``log``, stopped
    (SIGTERM, then SIGKILL) at the end."""
    with open(log, "wb") as output:
        child = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def site(
    env: dict[str, str], log: Path, *, threaded: bool, port: int | None = None
) -> Iterator[tuple[str, int]]:
    """``manage.py runserver`` on a free port; its URL and process id once it answers."""
    port = port or free_port()
    args = ["runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"]
    with process(env, log, *args, *([] if threaded else ["--nothreading"])) as child:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"runserver did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", child.pid


def site_env(work: Path, database: str, name: str, secret: str, tasks: str = "db") -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(work), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "bench_site_settings",
        "BENCH_DB": database,
        "BENCH_DB_NAME": name,
        "BENCH_TASKS": tasks,
        "BENCH_WEBHOOK_SECRET": secret,
        "BENCH_PG_HOST": PG["host"],
        "BENCH_PG_PORT": str(PG["port"]),
        "BENCH_PG_USER": PG["user"],
        "BENCH_PG_PASSWORD": PG["password"],
    }


def postgres_unreachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'autumn-django[services]')"
    try:
        psycopg.connect(**PG, connect_timeout=3).close()
    except Exception as error:
        reason = (str(error).splitlines() or [""])[0]
        return f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} ({type(error).__name__}: {reason})"
    return None


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"bench_webhooks_{os.getpid()}"
    with psycopg.connect(**PG, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(**PG, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def count_events(database: str, name: str) -> int:
    query = "SELECT count(*) FROM autumn_django_webhookevent"
    if database == "sqlite":
        with sqlite3.connect(name) as db:
            return int(db.execute(query).fetchone()[0])
    import psycopg

    with psycopg.connect(**{**PG, "dbname": name}) as db:
        row = db.execute(query).fetchone()
        return int(row[0]) if row else 0


# --- 1. throughput ----------------------------------------------------------------


KINDS = ("trivial", "new", "repeat", "refused")
#: The trivial view and the refused deliveries take this many times more
#: requests a run: they are fast, and a short run is all noise.
CHEAP = 3


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(
    pool: ProcessPoolExecutor, url: str, pid: int, kind: str, tag: str, total: int, clients: int, secret: str
) -> tuple[float, float]:
    """Deliveries a second, and the server's CPU ms a delivery, for ``total``
    deliveries from ``clients`` processes at once."""
    per_client = total // clients
    start_at = time.time() + 0.05 + 0.0002 * per_client  # after every client has signed its bodies
    cpu_before = cpu_seconds(pid)
    futures = [
        pool.submit(_client, url, kind, tag, index, per_client, secret, start_at) for index in range(clients)
    ]
    results = [future.result() for future in futures]
    cpu = cpu_seconds(pid) - cpu_before
    wrong = sum(result[2] for result in results)
    if wrong:
        first = next(result[3] for result in results if result[3])
        raise SystemExit(
            f"{wrong} of {per_client * clients} {kind} deliveries were answered wrongly: {first}"
        )
    elapsed = max(result[1] for result in results) - min(result[0] for result in results)
    return per_client * clients / elapsed, cpu * 1000 / (per_client * clients)


def throughput(
    pool: ProcessPoolExecutor, work: Path, database: str, name: str, events: int, rounds: int
) -> tuple[list[dict[str, Any]], int]:
    """For each server and client count, ``rounds`` rounds of the four kinds
    one after the other; each kind's best round (the machine may be busy)."""
    secret, other = make_webhook_secret(), make_webhook_secret()
    env = site_env(work, database, name, secret)
    rows, sent = [], 0
    for threaded in (False, True):
        label = "threaded" if threaded else "--nothreading"
        with site(env, work / f"runserver-{database}.log", threaded=threaded) as (url, pid):
            rate(pool, url, pid, "trivial", "warm", 20, 1, secret)  # imports, the connection
            rate(pool, url, pid, "new", f"warm-{label}", 20, 1, secret)
            sent += 20
            for clients in (1, 4):
                row: dict[str, Any] = {"server": label, "clients": clients}
                for number in range(rounds):
                    tag = f"{'t' if threaded else 's'}{clients}r{number}"
                    for kind in KINDS:
                        count = events * CHEAP if kind in ("trivial", "refused") else events
                        key = other if kind == "refused" else secret
                        speed, cpu = rate(pool, url, pid, kind, tag, count, clients, key)
                        row[kind] = max(row.get(kind, 0.0), speed)
                        row[f"{kind}_cpu"] = min(row.get(f"{kind}_cpu", math.inf), cpu)
                    sent += events // clients * clients
                rows.append(row)
    stored = count_events(database, name)
    if stored != sent:
        raise SystemExit(f"{sent} distinct deliveries were accepted but {stored} WebhookEvent rows exist")
    return rows, stored


def print_throughput(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(
        f"  {'server':<14}{'clients':>8}{'trivial view':>14}{'new event':>17}"
        f"{'repeat (dedupe)':>17}{'bad signature':>17}"
    )
    for row in rows:
        base = row["trivial"]
        cells = "".join(f"{row[kind]:>9.0f} ({row[kind] / base:.2f})" for kind in KINDS[1:])
        print(f"  {row['server']:<14}{row['clients']:>8}{base:>8.0f} req/s{cells}")
    print("  Server CPU a delivery (runserver process, all threads; PostgreSQL's own work not included):")
    print(
        f"  {'server':<14}{'clients':>8}{'trivial view':>14}{'new event':>17}"
        f"{'repeat (dedupe)':>17}{'bad signature':>17}"
    )
    for row in rows:
        base = row["trivial_cpu"]
        cells = "".join(
            f"{row[kind + '_cpu']:.2f} ms ({row[kind + '_cpu'] - base:+.2f})".rjust(17) for kind in KINDS[1:]
        )
        print(f"  {row['server']:<14}{row['clients']:>8}{base:>11.2f} ms{cells}")


# --- 2. latency ---------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def latency(
    work: Path, database: str, name: str, trials: int, intervals: list[float]
) -> list[dict[str, Any]]:
    """Runs :func:`latency_child` in a process of its own (Django set up on
    this database) and returns its rows."""
    env = site_env(work, database, name, make_webhook_secret(), tasks="immediate")
    config = {"work": str(work), "database": database, "trials": trials, "intervals": intervals}
    done = subprocess.run(
        [sys.executable, __file__, "--latency-child", json.dumps(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise SystemExit(
            f"the latency run on {database} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def latency_child(config: dict[str, Any]) -> None:
    """The emulator on HTTP in this process, the site's runserver (and
    db_worker) as processes; for each path, ``trials`` + 1 attaches (the
    first not counted), each to a customer of its own."""
    from autumn_django.emulator import Emulator, EmulatorServer

    work, database, trials = Path(config["work"]), config["database"], config["trials"]
    emulator = Emulator(plans=["pro"])
    with EmulatorServer(emulator) as autumn:
        os.environ["BENCH_AUTUMN_URL"] = autumn.url
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django_tasks_db.models import DBTaskResult

        from autumn_django.models import Customer, WebhookEvent

        WebhookEvent.objects.all().delete()  # the throughput part's events and their tasks
        DBTaskResult.objects.all().delete()
        paths = [("ImmediateBackend (in the request)", "immediate", None)] + [
            (f"db_worker --interval {interval:g}", "db", interval) for interval in config["intervals"]
        ]
        port = free_port()
        # The pauses between attaches spread evenly over the worker's sleep
        # (in a shuffled order): the event comes at any moment of it.
        phases = [(index + 0.5) / (trials + 1) for index in range(trials + 1)]
        emulator.add_webhook(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", os.environ["BENCH_WEBHOOK_SECRET"])
        rows = []
        for number, (label, tasks, interval) in enumerate(paths):
            # The customers, pushed to the emulator at once (this process's
            # own backend is the ImmediateBackend).
            customers = []
            for index in range(trials + 1):
                user = get_user_model().objects.create_user(
                    f"latency-{number}-{index}", email=f"latency-{number}-{index}@example.com"
                )
                row = Customer.objects.of(user).get()
                if row.synced_at is None:
                    raise SystemExit(f"the mirror row of {user} was not synced: {row.last_error}")
                customers.append(row)
            env = {**os.environ, "BENCH_TASKS": tasks}
            with ExitStack() as stack:
                stack.enter_context(
                    site(env, work / f"latency-{database}-{number}.log", threaded=True, port=port)
                )
                if interval is not None:
                    stack.enter_context(
                        process(
                            env,
                            work / f"worker-{database}-{number}.log",
                            "db_worker",
                            "--interval",
                            str(interval),
                            "--no-startup-delay",
                            "--no-reload",
                        )
                    )
                mirror, acked = [], []
                random.Random(number).shuffle(phases)
                for index, row in enumerate(customers):
                    before = len(emulator.deliveries)
                    started = time.time()
                    # Sends billing.updated, then customer.products.updated.
                    emulator.attach(row.customer_id, "pro")
                    shown = Customer.objects.filter(pk=row.pk, plans__plan_id="pro", plans__status="active")
                    deadline = started + 60
                    while not shown.exists():
                        if time.time() > deadline:
                            raise SystemExit(f"{label}: the plan never showed; see {work}")
                        time.sleep(0.002)
                    seen = time.time()
                    deliveries = emulator.wait_for_deliveries(before + 2, timeout=30)[before:]
                    if not all(delivery.ok for delivery in deliveries):
                        raise SystemExit(f"{label}: a delivery failed: {deliveries}")
                    first_ack = min(delivery.at for delivery in deliveries)
                    if index:  # the first warms the server, the worker, the connections
                        mirror.append((seen - started) * 1000)
                        acked.append((first_ack - started) * 1000)
                    # Both events processed, then a pause: the next event comes
                    # at some moment of the worker's sleep, as a real one
                    # would, not just as it looks again.
                    ids = {delivery.message_id for delivery in deliveries}
                    waiting = WebhookEvent.objects.filter(svix_id__in=ids, state=WebhookEvent.State.PENDING)
                    while waiting.exists() and time.time() < deadline:
                        time.sleep(0.005)
                    time.sleep((interval or 0.05) * phases[index])
            rows.append(
                {
                    "path": label,
                    "trials": len(mirror),
                    "ack_median": statistics.median(acked),
                    "ack_p95": percentile(acked, 0.95),
                    "median": statistics.median(mirror),
                    "p95": percentile(mirror, 0.95),
                    "max": max(mirror),
                }
            )
    print(json.dumps(rows))


def print_latency(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'path':<36}{'200 median':>12}{'p95':>10}{'mirror median':>15}{'p95':>10}{'max':>10}")
    for row in rows:
        print(
            f"  {row['path']:<36}{row['ack_median']:>9.1f} ms{row['ack_p95']:>7.1f} ms"
            f"{row['median']:>12.1f} ms{row['p95']:>7.1f} ms{row['max']:>7.0f} ms"
        )


# --- main -----------------------------------------------------------------------------


def one_database(
    pool: ProcessPoolExecutor, work: Path, database: str, name: str, options: argparse.Namespace
) -> None:
    """Both parts on one (empty) database, their tables printed."""
    manage(site_env(work, database, name, "whsec_" + "A" * 32), "migrate", "--no-input")
    if database == "sqlite":
        with sqlite3.connect(name) as db:
            db.execute("PRAGMA journal_mode=WAL")
    shown = "SQLite (WAL)" if database == "sqlite" else "PostgreSQL"
    rows, stored = throughput(pool, work, database, name, options.events, options.rounds)
    print_throughput(
        f"Deliveries a second, {shown}, best of {options.rounds} rounds "
        f"(ratio to the trivial view of the same server and clients)",
        rows,
    )
    print(f"  ({stored} WebhookEvent rows stored, one per distinct svix-id sent)")
    intervals = [float(value) for value in options.intervals.split(",") if value.strip()]
    print_latency(
        f"From the emulator's send to the mirror showing the plan, {shown}, threaded runserver "
        f"({options.trials} trials each; 200: the emulator's first answer)",
        latency(work, database, name, options.trials, intervals),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200, help="deliveries a throughput run (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, the best kept (default 3)")
    parser.add_argument("--trials", type=int, default=20, help="attaches a latency path (default 20)")
    parser.add_argument(
        "--intervals", default="1,0.1", help="db_worker --interval values, comma-separated (default 1,0.1)"
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--latency-child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.latency_child:
        latency_child(json.loads(options.latency_child))
        return
    options.events = events = max(4, options.events // 4 * 4)
    import importlib.util

    if importlib.util.find_spec("django_tasks_db") is None:
        raise SystemExit(
            "django-tasks-db is not installed: pip install -e '.[services]' (it needs Django 5.2+)"
        )

    import django

    began = time.monotonic()
    print(
        f"Webhook endpoint benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"Django {django.get_version()}; runserver, {events} deliveries a run "
        f"({events * CHEAP} for the trivial view and bad signatures), "
        f"body {len(event_body('user_0_000000'))} bytes"
    )
    databases = ["sqlite"]
    unreachable = "skipped (--no-postgres)" if options.no_postgres else postgres_unreachable()
    if unreachable:
        print(f"PostgreSQL part skipped: {unreachable}")
    else:
        databases.append("postgresql")
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    (work / "bench_site_settings.py").write_text(SETTINGS)
    (work / "bench_site_urls.py").write_text(URLS)
    try:
        with ProcessPoolExecutor(4) as pool:
            list(pool.map(abs, range(4)))  # start the load processes before timing
            for database in databases:
                with ExitStack() as stack:
                    if database == "sqlite":
                        name = str(work / "db.sqlite3")
                    else:
                        name = stack.enter_context(postgres_database())
                    one_database(pool, work, database, name, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n({time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
