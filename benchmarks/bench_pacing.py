"""Many processes, one rate budget: task workers against Autumn's real limits.

Needs PostgreSQL and Redis (as tests/settings_services.py does): creates its
own database (dropped at the end) and uses one Redis database index, which
it flushes before each run (``--redis-url``, default db 14). Every process
is a real one: the HTTP emulator (with Autumn's published rate limits on),
``rqworker`` and ``db_worker`` processes, ``manage.py autumn_sync``, all
reading a settings module written to a temporary directory. Each scenario is
run with ``AUTUMN["RATE_LIMIT_STORE"]`` set (one budget in Redis, "shared")
and without it ("alone": each process paces itself), side by side.

1. ``--enqueue``: N users (``--sizes``, default 2,000 and 6,000) pushed
   once, their emails then changed with ``QuerySet.update`` (no signal),
   then one ``autumn_sync --enqueue`` (chunks of 500) for ``--workers`` RQ
   workers (default 4). Bound: N / 25 s (25 updates a second at Autumn).
   Targets: 0 answers of 429, within 1.15x of the bound.
2. Data migration: ``--saves`` users (default 2,000), pushed once, then each
   saved in a loop (``user.email = ...; user.save()``, signals on) with the
   database task backend and ``--workers`` ``db_worker`` processes. Targets:
   0 answers of 429, every row synced, within 1.2x of the bound.
3. Per process: peak RSS and CPU seconds (the workers, counted with the job
   processes RQ forks, the enqueueing command or saving loop, the emulator
   during the run), and how each grows from the first size to the last.
4. ``autumn_sync`` of ``--initial-users`` new users (default 20,000) at
   ``--initial-latency-ms`` (default 150) with the limits on: the default
   (adaptive concurrency, ceiling 256, ``--processes auto``) against the
   command as it was, ``--concurrency 32 --processes 1``; users/s, the
   ratio, the CPU per user of the command and its processes, and their RSS.

The emulator counts its answers per route and status in each one-second
window (as Autumn's limits count), so any 429 is placed in time, and a run
that misses its bound shows where the time went (``longest gap s``: the
longest stretch with no update answered; ``no_call_slot``: calls that gave
up after waiting ``RATE_LIMIT_MAX_WAIT`` for a slot, found in the workers'
logs). ``--json-out`` keeps every figure, with each run's timeline.

    python benchmarks/bench_pacing.py [--scenarios 1,2,4] [--sizes 2000,6000]
        [--saves 2000] [--initial-users 20000] [--workers 4] [--latency-ms 20]

With the defaults a run takes about 20 minutes on a 2-core machine (20,000
users through scenario 1 would take 800 s a budget on their own, hence
6,000 as the largest size by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "am_sk_test_" + "pacing".ljust(42, "0")
UPDATE = "customers.update"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SETTINGS = '''"""Written by benchmarks/bench_pacing.py for its processes."""
import os

SECRET_KEY = "bench-pacing"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "autumn_django",
    "django_tasks",
    "django_tasks_db",
    "django_rq",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["BENCH_PG_HOST"],
        "PORT": int(os.environ["BENCH_PG_PORT"]),
        "USER": os.environ["BENCH_PG_USER"],
        "NAME": os.environ["BENCH_PG_NAME"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]},
}
RQ_QUEUES = {"default": {"URL": os.environ["BENCH_REDIS_URL"]}}
AUTUMN = {
    "SECRET_KEY": os.environ["BENCH_AUTUMN_KEY"],
    "BASE_URL": os.environ.get("BENCH_AUTUMN_URL", "http://127.0.0.1:9"),
    "TASK_BACKEND": os.environ.get("BENCH_TASK_BACKEND", "default"),
}
if os.environ.get("BENCH_RATE_LIMIT_STORE"):
    AUTUMN["RATE_LIMIT_STORE"] = os.environ["BENCH_RATE_LIMIT_STORE"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"autumn_django": {"handlers": ["stderr"], "level": "WARNING"}},
}
'''


# --- processes and what they cost ---------------------------------------------------


def high_water_mb(pid: int) -> float:
    """The peak resident set of a live process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in descendants(child)]


class Proc:
    """A child process, what CPU it used and its peak memory.

    CPU seconds come from ``wait4`` when it ends: its own and those of the
    children it reaped, so an RQ worker's count includes the job processes it
    forked. Peak RSS is read from ``/proc`` (VmHWM) while it lives, every
    0.2 s, its own and its children's (``ru_maxrss`` would not do: a child
    inherits the high-water mark of the process that forked it, here the
    benchmark's own)."""

    live: list[Proc] = []
    _sampler: threading.Thread | None = None

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, **popen: Any) -> None:
        self.name, self.log, self.out = name, log, log.with_suffix(".out")
        self._log = open(log, "w")  # noqa: SIM115 - closed in finish()
        self._out = open(self.out, "w")  # noqa: SIM115 - closed in finish()
        popen.setdefault("stdout", self._out)
        self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stderr=self._log, text=True, **popen)
        self.pid = self.popen.pid
        self.result: dict[str, Any] | None = None
        self.peak_mb = self.peak_child_mb = 0.0
        Proc.live.append(self)
        if Proc._sampler is None:
            Proc._sampler = threading.Thread(target=Proc._sample_forever, daemon=True)
            Proc._sampler.start()

    def sample(self) -> None:
        self.peak_mb = max(self.peak_mb, high_water_mb(self.pid))
        for child in descendants(self.pid):
            self.peak_child_mb = max(self.peak_child_mb, high_water_mb(child))

    @classmethod
    def _sample_forever(cls) -> None:
        while True:
            for proc in list(cls.live):
                proc.sample()
            time.sleep(0.2)

    def text(self) -> str:
        """What the process wrote so far (stdout, then stderr)."""
        return self.out.read_text() + self.log.read_text()

    def cpu_now(self) -> float:
        """CPU seconds so far (all threads, and children already reaped)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS

    def finish(self, stop: int | None = None, timeout: float = 120.0) -> dict[str, Any]:
        if self.result is not None:
            return self.result
        if stop is not None and self.popen.poll() is None:
            self.sample()
            os.kill(self.pid, stop)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(self.pid, 0)
                break
            time.sleep(0.05)
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        Proc.live.remove(self)
        self._log.close()
        self._out.close()
        self.result = {
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(self.peak_mb, 1),
            "peak_child_rss_mb": round(self.peak_child_mb, 1),
            "returncode": self.popen.returncode,
        }
        return self.result

    def run(self, timeout: float = 3600.0) -> dict[str, Any]:
        """Wait for the process to end by itself."""
        return self.finish(None, timeout)


class Emulator:
    """The HTTP emulator in its own process, counting answers per second."""

    def __init__(self, scratch: Path, latency_ms: float, label: str) -> None:
        command = [sys.executable, __file__, "_emulator", "--port", "0", "--rate-limits"]
        command += ["--latency-ms", str(latency_ms)]
        log = scratch / f"emulator-{label}.log"
        self.proc = Proc(f"emulator {label}", command, dict(os.environ), log, stdout=subprocess.PIPE)
        assert self.proc.popen.stdout is not None
        line = self.proc.popen.stdout.readline()
        if " at " not in line:
            raise RuntimeError(f"the emulator did not start: {line!r}; see {self.proc.log}")
        self.url = line.split(" at ")[1].split(" ")[0]

    def stats(self) -> dict[str, Any]:
        import requests

        return requests.get(f"{self.url}/_emulator/stats", timeout=30).json()

    def stop(self) -> dict[str, Any]:
        return self.proc.finish(signal.SIGINT)


def serve_emulator(argv: list[str]) -> None:
    """``bench_pacing.py _emulator ...``: the emulator's own command line,
    with its answers counted per (second, route, status) and served in
    ``/_emulator/stats`` as ``windows``."""
    from autumn_django.emulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    options = parser.parse_args(argv)
    build = cli.build_emulator

    def counting(options: argparse.Namespace) -> Any:
        emulator = build(options)
        windows: Counter[tuple[int, str, int]] = Counter()
        lock = threading.Lock()
        record, stats = emulator._record, emulator.stats

        def recorded(method: str, path: str, route: str | None, response: Any, *rest: Any) -> None:
            record(method, path, route, response, *rest)
            with lock:
                windows[(math.floor(emulator.clock()), route or "unknown", response.status)] += 1

        def with_windows() -> dict[str, Any]:
            with lock:
                rows = [[second, route, status, n] for (second, route, status), n in sorted(windows.items())]
            return {**stats(), "windows": rows}

        emulator._record, emulator.stats = recorded, with_windows  # type: ignore[method-assign,assignment]
        return emulator

    cli.build_emulator = counting
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    cli.serve(options)


def run_saves(argv: list[str]) -> None:
    """``bench_pacing.py _saves N PREFIX``: a data migration's loop, signals on."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    count, prefix = int(argv[0]), argv[1]
    started = time.perf_counter()
    for user in get_user_model().objects.order_by("pk")[:count].iterator(chunk_size=500):
        user.email = f"{prefix}{user.pk}@example.com"
        user.save()
    print(json.dumps({"seconds": round(time.perf_counter() - started, 2)}))


# --- the bench's own Django ---------------------------------------------------------


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.scratch = Path(tempfile.mkdtemp(prefix="autumn-bench-pacing-"))
        (self.scratch / "bench_pacing_settings.py").write_text(SETTINGS)
        self.database = f"autumn_bench_pacing_{os.getpid()}"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.scratch), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "bench_pacing_settings",
            "BENCH_PG_HOST": options.pg_host,
            "BENCH_PG_PORT": str(options.pg_port),
            "BENCH_PG_USER": options.pg_user,
            "BENCH_PG_NAME": self.database,
            "BENCH_REDIS_URL": options.redis_url,
            "BENCH_AUTUMN_KEY": KEY,
        }
        self.env.pop("BENCH_RATE_LIMIT_STORE", None)
        self.runs = 0

    # set-up and tear-down

    def admin(self, sql: str) -> None:
        import psycopg

        options = self.options
        with psycopg.connect(
            host=options.pg_host,
            port=options.pg_port,
            user=options.pg_user,
            dbname=options.pg_admin_db,
            autocommit=True,
        ) as connection:
            connection.execute(sql)

    def start(self) -> None:
        self.admin(f'CREATE DATABASE "{self.database}"')
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("BENCH_", "DJANGO_"))})
        sys.path.insert(0, str(self.scratch))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def close(self) -> None:
        from django.db import connections

        for proc in list(Proc.live):  # left running by a run that failed
            proc.finish(signal.SIGTERM, timeout=30)

        connections.close_all()
        self.admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def machine(self) -> dict[str, str]:
        import django
        import redis
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0]
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
        versions = {}
        from importlib.metadata import version

        for package in ("pyrate-limiter", "redis", "rq", "django-rq", "django-tasks-db", "django-tasks-rq"):
            versions[package] = version(package)
        return {
            "nproc": nproc,
            "python": platform.python_version(),
            "django": django.get_version(),
            "redis_server": redis.Redis.from_url(self.options.redis_url).info("server")["redis_version"],  # type: ignore[index]
            "postgresql": postgres,
            **versions,
        }

    def reset(self, users: int) -> None:
        """An empty database with ``users`` users (no mirror row, no task)."""
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django_tasks_db.models import DBTaskResult

        from autumn_django.models import Customer

        User = get_user_model()
        tables = [User._meta.db_table, Customer._meta.db_table, DBTaskResult._meta.db_table]
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        for start in range(0, users, 5000):
            User.objects.bulk_create(
                User(username=f"user{n}", email=f"user{n}@example.com", first_name=f"User {n}")
                for n in range(start, min(start + 5000, users))
            )

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.options.redis_url).flushdb()

    def env_for(self, emulator: Emulator, *, shared: bool, backend: str = "default") -> dict[str, str]:
        env = {**self.env, "BENCH_AUTUMN_URL": emulator.url, "BENCH_TASK_BACKEND": backend}
        if shared:
            env["BENCH_RATE_LIMIT_STORE"] = self.options.redis_url
        return env

    def command(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self.runs += 1
        return Proc(
            name, [sys.executable, "-m", "django", *args], env, self.scratch / f"{self.runs}-{name}.log"
        )

    def push_once(self, emulator: Emulator, users: int) -> None:
        """Every user pushed (created at the emulator), before the measure."""
        proc = self.command(
            "push", ["autumn_sync", "--json", "--no-fail-on-error"], self.env_for(emulator, shared=False)
        )
        proc.run()
        summary = json.loads(proc.out.read_text() or "{}")
        if summary.get("created") != users:
            raise RuntimeError(f"the first push created {summary.get('created')} of {users}; see {proc.log}")

    def start_workers(self, kind: str, env: dict[str, str]) -> list[Proc]:
        if kind == "rq":
            args = ["rqworker", "default", "--job-class", "django_tasks_rq.backend.Job"]
        else:
            args = ["db_worker", "--interval", "0.1", "--no-startup-delay"]
        workers = [self.command(f"{kind}-worker", args, env) for _ in range(self.options.workers)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if kind == "rq":
                import redis
                from rq import Worker

                ready = Worker.count(connection=redis.Redis.from_url(self.options.redis_url))
            else:
                ready = sum("Starting worker" in worker.text() for worker in workers)
            if ready >= len(workers):
                return workers
            if any(worker.popen.poll() is not None for worker in workers):
                break
            time.sleep(0.2)
        raise RuntimeError(f"the {kind} workers did not start; see {workers[0].log}")

    # scenarios

    def wait_synced(self, prefix: str, total: int, idle: Any, bound: float) -> tuple[float, str]:
        """Seconds until ``total`` rows are synced with an email starting
        with ``prefix``, or until the workers are idle with some left."""
        from autumn_django.models import Customer

        started = time.time()
        idle_since = None
        while True:
            synced = Customer.objects.filter(state="synced", email__startswith=prefix).count()
            now = time.time()
            if synced >= total:
                return now, "all synced"
            if idle():
                idle_since = idle_since or now
                if now - idle_since > 2:
                    return now, f"workers idle, {total - synced} not synced"
            else:
                idle_since = None
            if now - started > bound * self.options.give_up:
                return now, f"gave up after {now - started:.0f} s, {total - synced} not synced"
            time.sleep(0.2)

    def scenario(self, number: int, users: int, shared: bool) -> dict[str, Any]:
        """One run of scenario 1 (RQ, --enqueue) or 2 (db_worker, saves)."""
        from django.contrib.auth import get_user_model
        from django.db.models import CharField, Value
        from django.db.models.functions import Cast, Concat
        from django_tasks_db.models import DBTaskResult

        from autumn_django.models import Customer

        label = f"s{number}-{users}-{'shared' if shared else 'alone'}"
        print(f"  {label}: setting up {users} users...", flush=True)
        self.reset(users)
        emulator = Emulator(self.scratch, self.options.latency_ms, label)
        try:
            self.push_once(emulator, users)
            self.flush_redis()
            kind = "rq" if number == 1 else "db"
            env = self.env_for(emulator, shared=shared, backend="rq" if number == 1 else "default")
            prefix = f"{label}-"
            if number == 1:
                get_user_model().objects.update(
                    email=Concat(Value(prefix), Cast("pk", CharField()), Value("@example.com"))
                )
            workers = self.start_workers(kind, env)
            emulator_cpu = emulator.proc.cpu_now()
            print(f"  {label}: measuring...", flush=True)
            t0 = time.time()
            if number == 1:
                driver = self.command("enqueue", ["autumn_sync", "--enqueue"], env)
                idle = self.rq_idle
            else:
                command = [sys.executable, __file__, "_saves", str(users), prefix]
                driver = Proc("saves", command, env, self.scratch / f"{label}-saves.log")
                idle = self.db_idle
            bound = users / 25
            # The driver runs alongside the workers; its cost is read when it ends.
            waiter = threading.Thread(target=driver.run, daemon=True)
            waiter.start()
            ended, outcome = self.wait_synced(prefix, users, lambda: not waiter.is_alive() and idle(), bound)
            waiter.join()
            seconds = ended - t0
            emulator_cpu = emulator.proc.cpu_now() - emulator_cpu
            worker_usage = [worker.finish(signal.SIGTERM) for worker in workers]
            stats = emulator.stats()
        finally:
            emulator_usage = emulator.stop()
        failed = Customer.objects.filter(state="failed").count()
        tasks = DBTaskResult.objects.count() if number == 2 else None
        windows = analyse(stats["windows"], t0, ended)
        log_text = "".join(worker.text() for worker in workers)
        return {
            "scenario": number,
            "users": users,
            "budget": "shared" if shared else "alone",
            "seconds": round(seconds, 1),
            "bound_s": bound,
            "over_bound": round(seconds / bound, 3),
            "outcome": outcome,
            "failed_rows": failed,
            "tasks_run": tasks,
            **windows,
            "driver": {**driver.result, "log": str(driver.log)},  # type: ignore[dict-item]
            "driver_output": driver.out.read_text()[-300:] if number == 2 else None,
            "workers": worker_usage,
            "emulator": {"cpu_s": round(emulator_cpu, 2), "peak_rss_mb": emulator_usage["peak_rss_mb"]},
            "worker_tracebacks": log_text.count("Traceback"),
            "worker_fallback_warnings": log_text.count("cannot be reached"),
            # A call that waited RATE_LIMIT_MAX_WAIT for its slot and gave up (retried later).
            "no_call_slot": log_text.count("(no_call_slot)"),
            # Tasks that failed (an RQ job stopped at its timeout among them).
            "failed_tasks": log_text.count(" state=FAILED"),
            "job_timeouts": sum(
                "exceeded maximum timeout" in block and " state=FAILED" in block
                for block in log_text.split("Task id=")
            ),
        }

    @staticmethod
    def db_idle() -> bool:
        from django_tasks_db.models import DBTaskResult

        return not DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).exists()

    def rq_idle(self) -> bool:
        import django_rq
        from rq.registry import StartedJobRegistry

        queue = django_rq.get_queue("default")
        return queue.count == 0 and StartedJobRegistry(queue=queue).count == 0

    def initial(self, users: int, concurrency: int | None) -> dict[str, Any]:
        """Scenario 4: autumn_sync of new users at Autumn-like latency."""
        from django.db import connection

        from autumn_django.models import Customer

        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {Customer._meta.db_table} RESTART IDENTITY CASCADE")
        label = f"s4-{concurrency or 'default'}"
        emulator = Emulator(self.scratch, self.options.initial_latency_ms, label)
        try:
            args = ["autumn_sync", "--json", "--no-fail-on-error"]
            if concurrency:  # as before this round: one process, a fixed number of threads
                args += ["--concurrency", str(concurrency), "--processes", "1"]
            print(f"  {label}: measuring {users} users...", flush=True)
            emulator_cpu = emulator.proc.cpu_now()
            t0 = time.time()
            proc = self.command("initial", args, self.env_for(emulator, shared=False))
            usage = proc.run()
            ended = time.time()
            emulator_cpu = emulator.proc.cpu_now() - emulator_cpu
            stats = emulator.stats()
        finally:
            emulator_usage = emulator.stop()
        summary = json.loads(proc.out.read_text())
        windows = analyse(stats["windows"], t0, ended, route="customers.get_or_create")
        return {
            "run": "default (adaptive, ceiling 256)"
            if concurrency is None
            else f"--concurrency {concurrency}",
            "users": users,
            "seconds": summary["duration_seconds"],
            "wall_s": round(ended - t0, 1),
            "users_per_s": round(users / summary["duration_seconds"], 1),
            "created": summary["created"],
            "failed": summary["failed"],
            "highest_concurrency": summary["concurrency"],
            "processes": summary.get("processes", 1),
            "answers_429": windows["answers_429"],
            "cpu_s": usage["cpu_s"],
            "cpu_ms_per_user": round(usage["cpu_s"] * 1000 / users, 2),
            "peak_rss_mb": usage["peak_rss_mb"],
            # Its processes (--processes), each its own interpreter.
            "process_rss_mb": usage["peak_child_rss_mb"] or None,
            "emulator_cpu_s": round(emulator_cpu, 2),
            "emulator_peak_rss_mb": emulator_usage["peak_rss_mb"],
        }

    def startup_cost(self) -> dict[str, Any]:
        """What starting ``manage.py autumn_sync`` costs before any work."""
        proc = self.command("startup", ["autumn_sync", "--help"], self.env)
        return proc.run()


def analyse(rows: list[list[Any]], t0: float, t1: float, route: str = UPDATE) -> dict[str, Any]:
    """The emulator's answers to ``route`` in the run's one-second windows."""
    first, last = math.floor(t0), math.floor(t1)
    per_second: dict[int, Counter[int]] = {}
    for second, name, status, count in rows:
        if name == route and first <= second <= last:
            per_second.setdefault(second, Counter())[status] += count
    ok = sorted(second for second, counts in per_second.items() if counts[200])
    full = [per_second[second][200] for second in ok[1:-1]]  # the first and last windows are partial
    limited = {second: counts for second, counts in per_second.items() if counts[429]}
    gaps = [later - earlier - 1 for earlier, later in zip(ok, ok[1:], strict=False)]
    return {
        "answers_ok": sum(counts[200] for counts in per_second.values()),
        "answers_429": sum(counts[429] for counts in per_second.values()),
        "windows_with_429": len(limited),
        "most_429_in_a_window": max((counts[429] for counts in limited.values()), default=0),
        "first_ok_after_s": round(ok[0] - t0, 1) if ok else None,
        "last_ok_after_s": round(ok[-1] + 1 - t0, 1) if ok else None,
        "ok_per_full_window_median": statistics.median(full) if full else None,
        "ok_per_full_window_max": max(full, default=None),
        "ok_per_full_window_min": min(full, default=None),
        "longest_gap_s": max(gaps, default=0),
        "timeline": [
            [second - first, per_second[second][200], per_second[second][429]]
            for second in sorted(per_second)
        ],
        "worst_windows": [
            {"at_s": second - first, "ok": counts[200], "429": counts[429]}
            for second, counts in sorted(limited.items(), key=lambda item: -item[1][429])[:8]
        ],
    }


# --- output -------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [
        [str(row.get(key, "")) if row.get(key) is not None else "" for key, _ in columns] for row in rows
    ]
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (_, title) in enumerate(columns)]
    lines = ["  ".join(title.ljust(width) for (_, title), width in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(lines)


SCENARIOS = {
    1: ("RQ workers + autumn_sync --enqueue (emails changed by QuerySet.update)", 1.15),
    2: ("db_worker processes + a loop of user.save() (signals on)", 1.2),
}
RUN_COLUMNS = [
    ("users", "users"),
    ("budget", "budget"),
    ("seconds", "s"),
    ("bound_s", "bound s"),
    ("over_bound", "x bound"),
    ("answers_429", "429s"),
    ("windows_with_429", "windows w/ 429"),
    ("per_window", "200s/window (median, max)"),
    ("longest_gap_s", "longest gap s"),
    ("no_call_slot", "no_call_slot"),
    ("failed_rows", "failed"),
    ("outcome", "outcome"),
    ("met", "target met"),
]
RESOURCE_COLUMNS = [
    ("run", "run"),
    ("driver", "driver"),
    ("driver_cpu", "CPU s"),
    ("driver_rss", "RSS"),
    ("worker_cpu", "each worker CPU s"),
    ("worker_rss", "worker RSS (max)"),
    ("job_rss", "job process RSS (max)"),
    ("emulator_cpu", "emulator CPU s"),
    ("emulator_rss", "emulator RSS"),
]
INITIAL_COLUMNS = [
    ("run", "run"),
    ("seconds", "s"),
    ("users_per_s", "users/s"),
    ("highest_concurrency", "highest in flight"),
    ("processes", "processes"),
    ("created", "created"),
    ("failed", "failed"),
    ("answers_429", "429s"),
    ("cpu_s", "client CPU s"),
    ("cpu_ms_per_user", "CPU ms/user"),
    ("peak_rss_mb", "client RSS"),
    ("process_rss_mb", "its processes' RSS"),
    ("emulator_cpu_s", "emulator CPU s"),
]


def met(run: dict[str, Any], target: float) -> bool:
    return (
        run["answers_429"] == 0
        and run["over_bound"] <= target
        and run["failed_rows"] == 0
        and run["outcome"] == "all synced"
    )


def workers_total(run: dict[str, Any], key: str) -> float:
    values = [worker[key] for worker in run["workers"]]
    return sum(values) if key == "cpu_s" else max(values)


def report(result: dict[str, Any]) -> None:
    print()
    print("Machine: " + ", ".join(f"{key} {value}" for key, value in result["machine"].items()))
    print(f"{result['workers']} workers; latency {result['latency_ms']:g} ms; Autumn's rate limits on")
    runs = result["runs"]
    for number, (title, target) in SCENARIOS.items():
        mine = [run for run in runs if run["scenario"] == number]
        if not mine:
            continue
        print(f"\nScenario {number}: {title}; target: 0 answers of 429, within {target}x of N/25 s")
        rows = [
            {
                **run,
                "per_window": f"{run['ok_per_full_window_median']}, {run['ok_per_full_window_max']}",
                "met": "yes" if met(run, target) else "no",
            }
            for run in mine
        ]
        print(table(rows, RUN_COLUMNS))
        for users in sorted({run["users"] for run in mine}):
            pair = {run["budget"]: run for run in mine if run["users"] == users}
            if "shared" in pair and "alone" in pair:
                ratio = pair["alone"]["seconds"] / pair["shared"]["seconds"]
                print(
                    f"  {users} users: time alone / shared {ratio:.2f}x; "
                    f"429s alone {pair['alone']['answers_429']}, shared {pair['shared']['answers_429']}"
                )
        for run in mine:
            if run["worst_windows"]:
                worst = ", ".join(f"+{w['at_s']}s: {w['ok']} ok/{w['429']} 429" for w in run["worst_windows"])
                print(f"  {run['users']} {run['budget']}: worst windows {worst}")
    if runs:
        print("\nPer process (CPU seconds; peak RSS in MB; an RQ worker's CPU includes its job processes)")
        rows = [
            {
                "run": f"s{run['scenario']} {run['users']} {run['budget']}",
                "driver": "enqueue" if run["scenario"] == 1 else "save loop",
                "driver_cpu": run["driver"]["cpu_s"],
                "driver_rss": run["driver"]["peak_rss_mb"],
                "worker_cpu": "/".join(f"{w['cpu_s']:.1f}" for w in run["workers"]),
                "worker_rss": workers_total(run, "peak_rss_mb"),
                "job_rss": workers_total(run, "peak_child_rss_mb") or None,
                "emulator_cpu": run["emulator"]["cpu_s"],
                "emulator_rss": run["emulator"]["peak_rss_mb"],
            }
            for run in runs
        ]
        print(table(rows, RESOURCE_COLUMNS))
        growth(runs)
    initial = result["initial"]
    if initial:
        print(
            f"\nScenario 4: autumn_sync of {initial[0]['users']} new users, latency "
            f"{result['initial_latency_ms']:g} ms, Autumn's rate limits on"
        )
        print(table(initial, INITIAL_COLUMNS))
        if len(initial) == 2:
            ratio = initial[0]["users_per_s"] / initial[1]["users_per_s"]
            print(f"  default / --concurrency 32: {ratio:.2f}x users/s")
        if result.get("startup"):
            print(f"  (starting manage.py autumn_sync alone costs {result['startup']['cpu_s']} s of CPU)")


def growth(runs: list[dict[str, Any]]) -> None:
    """How scenario 1's figures grow from its smallest size to its largest."""
    sizes = sorted({run["users"] for run in runs if run["scenario"] == 1})
    if len(sizes) < 2:
        return
    small, large = sizes[0], sizes[-1]
    for budget in ("shared", "alone"):
        pair = [
            next((r for r in runs if r["scenario"] == 1 and r["users"] == n and r["budget"] == budget), None)
            for n in (small, large)
        ]
        a, b = pair
        if a is None or b is None:
            continue
        ratios = {
            "time": b["seconds"] / a["seconds"],
            "enqueue CPU": b["driver"]["cpu_s"] / a["driver"]["cpu_s"],
            "enqueue RSS": b["driver"]["peak_rss_mb"] / a["driver"]["peak_rss_mb"],
            "workers CPU": workers_total(b, "cpu_s") / workers_total(a, "cpu_s"),
            "worker RSS": workers_total(b, "peak_rss_mb") / workers_total(a, "peak_rss_mb"),
            "emulator CPU": b["emulator"]["cpu_s"] / a["emulator"]["cpu_s"],
            "emulator RSS": b["emulator"]["peak_rss_mb"] / a["emulator"]["peak_rss_mb"],
        }
        print(
            f"  scenario 1 {budget}, {small} -> {large} users ({large / small:g}x): "
            + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_emulator":
        return serve_emulator(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_saves":
        return run_saves(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default="1,2,4", help="which to run (default 1,2,4; 3 is read from 1)")
    parser.add_argument("--sizes", default="2000,6000", help="users for scenario 1 (default 2000,6000)")
    parser.add_argument("--alone-sizes", help="sizes of scenario 1 also run alone (default: every size)")
    parser.add_argument("--budgets", default="shared,alone", help="shared, alone or both (default both)")
    parser.add_argument("--saves", type=int, default=2000, help="users saved in scenario 2 (default 2000)")
    parser.add_argument("--initial-users", type=int, default=20_000, help="scenario 4 (default 20000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--latency-ms", type=float, default=20, help="emulator latency, scenarios 1-2")
    parser.add_argument("--initial-latency-ms", type=float, default=150, help="emulator latency, scenario 4")
    parser.add_argument("--give-up", type=float, default=4.0, help="stop waiting after this many bounds")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed before each run")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-admin-db", default="test", help="a database to connect to for CREATE DATABASE")
    parser.add_argument("--json-out", help="also write the results here as JSON")
    options = parser.parse_args()
    scenarios = {int(n) for n in options.scenarios.split(",")}
    sizes = [int(n) for n in options.sizes.split(",")]
    alone_sizes = [int(n) for n in options.alone_sizes.split(",")] if options.alone_sizes else sizes
    budgets = [budget == "shared" for budget in options.budgets.split(",")]

    bench = Bench(options)
    bench.start()
    started = time.monotonic()
    result: dict[str, Any] = {
        "workers": options.workers,
        "latency_ms": options.latency_ms,
        "initial_latency_ms": options.initial_latency_ms,
        "runs": [],
        "initial": [],
    }

    def measured(run: dict[str, Any]) -> None:
        result["runs"].append(run)
        print(
            "   ", {key: run[key] for key in ("seconds", "over_bound", "answers_429", "outcome")}, flush=True
        )

    try:
        result["machine"] = bench.machine()
        print("Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), flush=True)
        if 1 in scenarios:
            for users in sizes:
                for shared in budgets:
                    if shared or users in alone_sizes:
                        measured(bench.scenario(1, users, shared))
        if 2 in scenarios:
            for shared in budgets:
                measured(bench.scenario(2, options.saves, shared))
        if 4 in scenarios:
            result["startup"] = bench.startup_cost()
            bench.reset(options.initial_users)
            for concurrency in (None, 32):
                result["initial"].append(bench.initial(options.initial_users, concurrency))
        result["total_s"] = round(time.monotonic() - started)
    finally:
        bench.close()
    report(result)
    print(f"\nwhole run: {result['total_s']} s; logs in {bench.scratch}")
    if options.json_out:
        Path(options.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
