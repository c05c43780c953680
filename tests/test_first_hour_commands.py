"""The first hour with the commands: ``autumn_sync --retry`` says what it
left waiting, when it is due and how to push it now, and the command it
prints does that."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from autumn_django.models import Customer

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command("autumn_sync", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_retry_before_a_failed_rows_time_says_it_waits_when_and_how_to_push_it_now(
    autumn_emulator, make_user, commit
):
    autumn_emulator.fail_next(4, status=503)  # the first try and MAX_RETRIES (3) retries
    with commit():
        user = make_user("grace")
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and row.next_attempt_at > timezone.now()
    out = run("--retry")
    assert "autumn_sync retry in" in out and "created 0" in out and "API calls: none" in out
    due = f"{timezone.localtime(row.next_attempt_at):%Y-%m-%d %H:%M:%S %Z}"
    assert f"1 customer waits after a failure for a retry: it is due at {due} (in " in out
    hint = f"--retry sends only what is due. To push it now: manage.py autumn_sync --users {user.pk} "
    assert hint in out
    pushed = run("--users", str(user.pk))  # the command as printed, after "manage.py"
    assert "created 1" in pushed
    assert Customer.objects.get(pk=row.pk).state == "synced"
    assert "waits" not in run("--retry")  # nothing left to say


def test_retry_names_a_full_push_when_many_wait(autumn_emulator, make_user, commit):
    autumn_emulator.fail_next(4 * 12, status=503)
    with commit():
        for number in range(12):
            make_user(f"u{number}")
    assert Customer.objects.filter(state="failed").count() == 12
    out = run("--retry")
    assert "12 customers wait after a failure for a retry: the first is due at " in out
    assert "To push them now: manage.py autumn_sync (a full push does not wait for retry times)" in out


def test_retry_says_which_failures_no_retry_will_send(autumn_emulator, make_user, commit):
    autumn_emulator.fail_next(1, status=400, code="invalid_inputs", message="email: bad")
    with commit():
        user = make_user("refused")
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and row.next_attempt_at is None
    out = run("--retry")
    assert "1 customer failed and waits for a fix: Autumn refused the change, so --retry does not" in out
    assert out.rstrip().endswith(
        f"Once the cause is fixed, push again: manage.py autumn_sync --users {user.pk}"
    )


def test_the_json_summary_stays_as_it_was(autumn_emulator, make_user, commit):
    autumn_emulator.fail_next(4, status=503)
    with commit():
        make_user("grace")
    summary = json.loads(run("--retry", "--json"))
    assert summary["mode"] == "retry" and summary["failed"] == 0
