"""The first hour with the commands: ``autumn_sync --retry`` says what it
left waiting, when it is due and how to push it now, and the command it
prints does that; ``attach_plan``, which the demo prints to attach a plan
by hand, attaches it at Autumn and says when the webhook brought it."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from autumn_django.emulator import Plan
from autumn_django.models import Customer
from autumn_django.signals import disable_sync
from autumn_django.testing import django_transport, make_webhook_secret

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


# --- manage.py attach_plan: the command the demo prints to attach a plan by hand --------------


def attach_plan(*args):
    out = StringIO()
    call_command("attach_plan", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def webhooks(autumn_emulator, autumn_settings):
    """The emulator's events delivered to the site in-process, signed with a
    secret it accepts, as the demo's emulator delivers them over HTTP."""
    secret = make_webhook_secret()
    autumn_settings(WEBHOOK_SECRETS=[secret])
    autumn_emulator.add_plan("pro")
    autumn_emulator.add_plan(Plan("credits", one_off=True))
    autumn_emulator.add_webhook("/autumn/webhooks/", secret, transport=django_transport())
    return autumn_emulator


# The webhook's processing runs at its commit, as on a served site.
@pytest.mark.django_db(transaction=True)
def test_attach_plan_attaches_at_autumn_and_says_when_the_webhook_brought_it(webhooks, make_user):
    user = make_user("grace")
    row = Customer.objects.of(user).get()
    out = attach_plan("grace", "pro")
    assert f"Attached pro to grace (Autumn customer {row.customer_id}).\n" in out
    assert "Autumn's webhook brought it to the mirror in " in out
    assert out.rstrip().endswith("ms: the Billing page of grace shows pro.")
    assert Customer.objects.get(pk=row.pk).has_plan("pro")
    assert webhooks.customer(row.customer_id)["subscriptions"][0]["plan_id"] == "pro"
    # A purchase can be made again and again: what the demo suggests trying.
    for _ in range(2):
        assert "the Billing page of grace shows credits." in attach_plan("grace", "credits")
    assert len(Customer.objects.get(pk=row.pk).data["purchases"]) == 2


@pytest.mark.django_db(transaction=True)
def test_attach_plan_says_so_when_no_webhook_comes(autumn_emulator, make_user):
    autumn_emulator.add_plan("pro")
    make_user("grace")
    out = attach_plan("grace", "pro", "--wait", "0.2")
    assert "Attached pro to grace" in out
    assert "The mirror does not show pro after 0.2 s: no webhook from Autumn reached the site." in out
    assert "Refresh from Autumn, on the Billing page, reads it now." in out


def test_attach_plan_gives_autumns_refusal(autumn_emulator, make_user, commit):
    with commit():
        make_user("grace")
    with pytest.raises(CommandError, match=r"Autumn refused to attach gold to \d+: Product gold not found"):
        attach_plan("grace", "gold")


def test_attach_plan_to_a_customer_no_user_is(autumn_emulator):
    autumn_emulator.add_plan("pro")
    autumn_emulator.add_customer(id="made-elsewhere")
    out = attach_plan("made-elsewhere", "pro")
    assert "Attached pro to made-elsewhere (Autumn customer made-elsewhere)." in out
    assert "No user or team of this site is that customer" in out


def test_attach_plan_names_what_to_start_when_nothing_answers():
    with pytest.raises(CommandError, match=r"No answer from Autumn at http://127\.0\.0\.1:9: is the demo"):
        attach_plan("42", "pro")


def test_attach_plan_to_a_user_not_mirrored_says_what_to_run(make_user):
    with disable_sync():
        make_user("grace")
    with pytest.raises(CommandError, match="grace is not an Autumn customer yet: run manage.py autumn_sync"):
        attach_plan("grace", "pro")
