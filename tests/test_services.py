"""Tests that need real servers: PostgreSQL (two database workers at once)
and Redis (the RQ backend). They run in a pytest of their own with
tests/settings_services.py. Where a server is absent they are skipped with
the reason, except in CI (CI=true), where they must run."""

import os
import socket

import pytest

from .separate_run import run_pytest

PG = (os.environ.get("AUTUMN_TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("AUTUMN_TEST_PG_PORT", "5432")))
REDIS = ("127.0.0.1", 6379)


def reachable(address):
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def require(*servers, packages=("django_tasks_db", "django_tasks_rq", "psycopg")):
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:  # an install choice, not a missing server: skipped in CI too
        pytest.skip(
            f"{', '.join(missing)} not installed: pip install 'autumn-django[services]' (needs Django 5.2+)"
        )
    for name, address in servers:
        if reachable(address):
            continue
        reason = f"{name} is not reachable at {address[0]}:{address[1]}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI must run this test")
        pytest.skip(reason)


def run_services_tests(expression, expected):
    run_pytest("tests.settings_services", "tests/services", "-k", expression, expected_passed=expected)


def test_database_workers_on_postgresql_never_lose_the_later_change_and_retry_later():
    """Two db_worker processes at once, an older push overtaking a newer one,
    a failed sync re-enqueued for its next_attempt_at, and autumn_sync
    --enqueue done by a worker."""
    require(("PostgreSQL", PG))
    run_services_tests("not rq and not soak", 10)


def test_the_engine_tests_pass_on_postgresql():
    """The sync engine's suites again, on PostgreSQL, which refuses values
    SQLite stores (a NUL character, text longer than its column) and
    compares text with integers in no join (the generic link, the migration)."""
    require(("PostgreSQL", PG), packages=("psycopg",))
    run_pytest(
        "tests.settings_postgres",
        "tests/test_sync.py",
        "tests/test_autumn_sync.py",
        "tests/test_hostile_inputs.py",
        "tests/test_races.py",
        "tests/test_properties.py",
        "tests/test_teams.py",
        "tests/test_migrations.py",
        expected_passed=None,
    )


def test_a_soak_with_faults_and_killed_workers_leaves_no_orphan():
    """Two db_workers, injected 5xx/429, lost requests and replies, held
    requests, three kill -9 and an outage while users are created, changed,
    rolled back, deleted and re-created; then nothing is lost, duplicated,
    stale or orphaned (benchmarks/soak.py runs it longer, repeatedly)."""
    require(("PostgreSQL", PG))
    run_services_tests("soak", 1)


def test_the_rq_backend_end_to_end_on_redis():
    require(("PostgreSQL", PG), ("Redis", REDIS))
    run_services_tests("rq", 1)
