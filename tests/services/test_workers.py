"""Background workers on real servers (run by tests/test_services.py in a
pytest of its own, with tests/settings_services.py)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from autumn_django.models import Customer

ROOT = Path(__file__).resolve().parent.parent.parent
ROUNDS = 15
pytestmark = pytest.mark.django_db(transaction=True)


def worker_env(server, settings, **extra):
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_services",
        "AUTUMN_TEST_PG_NAME": connection.settings_dict["NAME"],
        "AUTUMN_BASE_URL": server.url,
        "AUTUMN_SECRET_KEY": settings.AUTUMN["SECRET_KEY"],
        **extra,
    }


def wait_for(condition, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_db_worker_batch(server, settings, *args):
    """Run db_worker until the queue is empty, and check it exited cleanly."""
    command = [sys.executable, "-m", "django", "db_worker", "--batch", "--no-startup-delay", *args]
    result = subprocess.run(
        command, cwd=ROOT, env=worker_env(server, settings), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def start_db_workers(server, settings, count=2):
    command = [sys.executable, "-m", "django", "db_worker", "--interval", "0.02", "--no-startup-delay"]
    return [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=worker_env(server, settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def stop(workers):
    for worker in workers:
        worker.terminate()
    return [worker.communicate(timeout=20)[1] for worker in workers]


def queue_drained():
    from django_tasks_db.models import DBTaskResult

    return not DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).exists()


def test_a_change_saved_while_a_push_is_on_the_wire_is_pushed_after_it(
    autumn_emulator_server, django_user_model, settings
):
    """Worker A pushes email 1 and its request is held on the wire; meanwhile
    the user saves email 2. On PostgreSQL worker B waits for A's sync of the
    row (an advisory lock) instead of overtaking it, so email 2 lands last.
    Without the lock the version check puts it right (tests/test_races.py
    and the next test exercise that path)."""
    emulator = autumn_emulator_server.emulator
    workers = start_db_workers(autumn_emulator_server, settings)
    try:
        user = django_user_model.objects.create_user(username="race", email="race-0@example.com")
        wait_for(lambda: Customer.objects.of(user).filter(state="synced").exists(), what="the first sync")
        emulator.delay_next(1, "customers.update", ms=1500)
        user.email = "race-1@example.com"
        user.save()
        time.sleep(0.4)  # a worker polls every 20 ms: A's request is now held on the wire
        user.email = "race-2@example.com"
        user.save()
        wait_for(
            lambda: queue_drained() and Customer.objects.of(user).get().state == "synced", what="both syncs"
        )
    finally:
        errors = stop(workers)
    updates = [entry.body.get("email") for entry in emulator.requests("customers.update")]
    assert updates[:2] == ["race-1@example.com", "race-2@example.com"], (updates, errors)  # B waited for A
    assert updates[-1] == "race-2@example.com"
    assert emulator.customer(str(user.pk))["email"] == "race-2@example.com"
    row = Customer.objects.of(user).get()
    assert (row.state, row.email) == ("synced", "race-2@example.com")


def test_two_database_workers_never_lose_the_later_change(
    autumn_emulator_server, django_user_model, settings
):
    from django_tasks_db.models import DBTaskResult

    emulator = autumn_emulator_server.emulator
    # Pushes take time and may overtake each other, so the workers' syncs of
    # one user overlap and an older push can land after a newer one.
    emulator.latency_ms, emulator.latency_jitter_ms = 30, 30
    users = [
        django_user_model.objects.create_user(username=f"user{n}", email=f"user{n}-start@example.com")
        for n in range(4)
    ]
    assert emulator.requests() == []  # enqueued in the database, not run here
    workers = start_db_workers(autumn_emulator_server, settings)
    try:
        pace = random.Random(7)
        for round_ in range(ROUNDS):  # changes land while both workers push
            for user in users:
                user.email = f"{user.username}-{round_}@example.com"
                user.save()
                time.sleep(pace.uniform(0, 0.05))
        wait_for(queue_drained, what="the task queue to drain")
    finally:
        errors = stop(workers)
    for user in users:
        latest = f"{user.username}-{ROUNDS - 1}@example.com"
        assert emulator.customer(str(user.pk))["email"] == latest, errors
        row = Customer.objects.of(user).get()
        assert (row.state, row.email) == ("synced", latest)
    assert len(emulator.customers()) == len(users)
    assert not DBTaskResult.objects.filter(status="FAILED").exists()
    worker_ids = {
        worker_id for ids in DBTaskResult.objects.values_list("worker_ids", flat=True) for worker_id in ids
    }
    assert len(worker_ids) == 2  # both workers took part


def test_the_rq_backend_syncs_on_an_rq_worker(autumn_emulator_server, django_user_model, settings):
    import django_rq

    settings.AUTUMN = {**settings.AUTUMN, "TASK_BACKEND": "rq"}
    django_rq.get_connection("default").flushdb()
    emulator = autumn_emulator_server.emulator
    env = worker_env(autumn_emulator_server, settings, AUTUMN_TASK_BACKEND="rq")
    command = [
        sys.executable,
        "-m",
        "django",
        "rqworker",
        "default",
        "--burst",
        "--job-class",
        "django_tasks_rq.backend.Job",
    ]

    def run_worker():
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]

    user = django_user_model.objects.create_user(username="rq", email="rq@example.com")
    assert emulator.requests() == [] and Customer.objects.of(user).get().state == "pending"
    run_worker()
    assert emulator.customer(str(user.pk))["email"] == "rq@example.com"
    assert Customer.objects.of(user).get().state == "synced"

    user.email = "rq2@example.com"
    user.save()
    run_worker()
    assert emulator.customer(str(user.pk))["email"] == "rq2@example.com"

    customer_id = str(user.pk)
    user.delete()
    run_worker()
    assert emulator.customer(customer_id) is None and Customer.objects.count() == 0


def test_a_retryable_failure_re_enqueues_the_task_for_later(
    autumn_emulator_server, django_user_model, settings
):
    """The database backend can defer, so a failed sync schedules its own retry."""
    from django_tasks_db.models import DBTaskResult

    autumn_emulator_server.emulator.fail_next(50, status=503, headers={"Retry-After": "0"})
    user = django_user_model.objects.create_user(username="later", email="later@example.com")
    run_db_worker_batch(autumn_emulator_server, settings, "--max-tasks", "1")
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and row.next_attempt_at
    retry = DBTaskResult.objects.get(status="READY")
    assert retry.args_kwargs == {"args": [row.pk], "kwargs": {}}
    assert abs((retry.run_after - row.next_attempt_at).total_seconds()) < 1


def test_autumn_sync_enqueue_is_done_by_a_database_worker(
    autumn_emulator_server, django_user_model, settings
):
    from django.core.management import call_command

    from autumn_django.signals import disable_sync

    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"bulk{n}", email=f"bulk{n}@example.com") for n in range(45)]
        )
    out = io.StringIO()
    call_command("autumn_sync", "--enqueue", "--batch-size", "20", stdout=out)
    assert "Enqueued 3 chunk tasks" in out.getvalue()
    assert autumn_emulator_server.emulator.requests() == []  # the command only enqueued
    run_db_worker_batch(autumn_emulator_server, settings)
    assert len(autumn_emulator_server.emulator.customers()) == 45
    assert Customer.objects.filter(state="synced").count() == 45


def test_autumn_sync_in_several_processes_pushes_each_object_once(
    autumn_emulator_server, django_user_model, settings, monkeypatch
):
    """--processes 3: three processes of the command, each taking every
    third batch and a third of the budget; one summary, one progress."""
    from django.core.management import call_command

    from autumn_django.signals import disable_sync

    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"proc{n}", email=f"proc{n}@example.com") for n in range(70)]
        )
    for name, value in worker_env(autumn_emulator_server, settings).items():
        monkeypatch.setenv(name, value)  # what the processes it starts read
    out, err = io.StringIO(), io.StringIO()
    call_command("autumn_sync", "--processes", "3", "--batch-size", "10", "--json", stdout=out, stderr=err)
    summary = json.loads(out.getvalue())
    assert (summary["created"], summary["failed"]) == (70, 0), summary
    assert summary["api_calls"] == {"customers.get_or_create": 70}
    creates = [e for e in autumn_emulator_server.emulator.requests() if e.route == "customers.get_or_create"]
    assert len(creates) == 70 and len(autumn_emulator_server.emulator.customers()) == 70
    assert Customer.objects.filter(state="synced").count() == 70
    assert "70/70 100%" in err.getvalue()  # the processes' progress, added up


def test_a_process_that_dies_fails_the_push_with_its_last_lines(
    autumn_emulator_server, django_user_model, settings, monkeypatch
):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    django_user_model.objects.create(username="someone")
    for name, value in worker_env(autumn_emulator_server, settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTUMN_SECRET_KEY", "not a key")  # each process stops at the settings check
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"--shard 1/2 ended with code 1 and no summary; its last lines"):
        call_command("autumn_sync", "--processes", "2", stdout=out, stderr=io.StringIO())
    assert "autumn_sync push in" in out.getvalue()  # what the others did is still shown


def test_what_the_processes_log_on_stdout_does_not_hide_their_summaries(
    autumn_emulator_server, django_user_model, settings, monkeypatch
):
    """A site that logs to stdout (containers), and a Redis that is down:
    each process logs its warning there, and the push still adds up."""
    from django.core.management import call_command

    from autumn_django.signals import disable_sync

    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"log{n}", email=f"log{n}@example.com") for n in range(20)]
        )
    for name, value in worker_env(autumn_emulator_server, settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTUMN_TEST_LOG_TO_STDOUT", "1")
    monkeypatch.setenv("AUTUMN_RATE_LIMIT_STORE", "redis://127.0.0.1:1/0")  # nothing listens there
    out, err = io.StringIO(), io.StringIO()
    call_command("autumn_sync", "--processes", "2", "--json", stdout=out, stderr=err)
    assert json.loads(out.getvalue())["created"] == 20
    assert err.getvalue().count("cannot be reached") == 2  # passed on, one per process


def start_slow_push(server, settings):
    """``python manage.py autumn_sync --processes 2`` against an emulator
    that takes 0.3 s an answer; returns the parent once both processes are
    calling Autumn."""
    server.emulator.latency_ms = 300
    parent = subprocess.Popen(
        [sys.executable, "manage.py", "autumn_sync", "--processes", "2", "--concurrency", "2"],
        cwd=ROOT,
        env=worker_env(server, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(server.emulator.requests()) >= 2, what="both processes calling Autumn")
    return parent


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"  # a zombie is gone too
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_stopping_the_command_stops_its_processes(autumn_emulator_server, django_user_model, settings, stop):
    """SIGTERM (a deploy, a container stopped) stops them at once; SIGKILL
    leaves them without a parent, and each stops as at Ctrl-C."""
    import signal

    from autumn_django.signals import disable_sync

    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"stop{n}", email=f"stop{n}@example.com") for n in range(200)]
        )
    parent = start_slow_push(autumn_emulator_server, settings)
    children = children_of(parent.pid)
    assert len(children) == 2
    parent.send_signal(getattr(signal, stop))
    _, err = parent.communicate(timeout=60)
    if stop == "SIGTERM":
        assert parent.returncode == 128 + signal.SIGTERM and "Stopped by SIGTERM" in err
    wait_for(lambda: all(gone(child) for child in children), timeout=60, what="the processes to stop")
    time.sleep(0.6)  # requests sent before the stop are still answered (0.3 s each)
    made = len(autumn_emulator_server.emulator.customers())
    time.sleep(1.0)
    assert len(autumn_emulator_server.emulator.customers()) == made < 200  # nobody calls any more
    assert not Customer.objects.exclude(state__in=["synced", "pending"]).exists()  # true states


def test_autumn_sync_on_postgresql_takes_a_process_per_cpu_by_itself(
    autumn_emulator_server, django_user_model, settings, monkeypatch
):
    from django.core.management import call_command

    from autumn_django import bulk
    from autumn_django.management.commands.autumn_sync import Command as AutumnSync
    from autumn_django.signals import disable_sync

    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"auto{n}", email=f"auto{n}@example.com") for n in range(30)]
        )
    for name, value in worker_env(autumn_emulator_server, settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(bulk, "OBJECTS_PER_PROCESS", 10)  # 30 objects: three processes' worth
    monkeypatch.setattr(bulk, "available_cpus", lambda: 2)
    out = io.StringIO()
    argv = [str(ROOT / "manage.py"), "autumn_sync", "--json"]
    monkeypatch.setattr("sys.argv", argv)
    AutumnSync(stdout=out, stderr=io.StringIO()).run_from_argv(argv)  # as `python manage.py` runs it
    summary = json.loads(out.getvalue())
    assert (summary["processes"], summary["created"]) == (2, 30)
    out.seek(0), out.truncate()
    call_command("autumn_sync", "--json", stdout=out, stderr=io.StringIO())
    summary = json.loads(out.getvalue())
    # call_command keeps to its process: the caller's settings may not be the module's.
    assert (summary["processes"], summary["unchanged"]) == (1, 30)
