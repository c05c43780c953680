"""From Autumn's side to the site's mirror: the emulator (over HTTP) attaches
a plan, signs the billing.updated event as Svix does and delivers it to the
example site served by a live server; the mirror then shows the plan."""

from __future__ import annotations

import time

import pytest

from autumn_django.models import Customer, WebhookEvent
from autumn_django.testing import make_webhook_secret

# The live server commits in its own thread, as production does.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def site(live_server, autumn_emulator_server, autumn_settings, make_user):
    """The example site behind a live server, its user mirrored, and the
    emulator delivering to its webhook endpoint."""
    secret = make_webhook_secret()
    autumn_settings(WEBHOOK_SECRETS=[secret])
    emulator = autumn_emulator_server.emulator
    emulator.add_plan("pro")
    user = make_user()  # transaction=True: the signal's sync runs at its commit
    row = Customer.objects.of(user).get()
    emulator.add_webhook(f"{live_server.url}/autumn/webhooks/", secret)
    return emulator, row


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def plans_of(row):
    row.refresh_from_db()
    return [sub["plan_id"] for sub in (row.data or {}).get("subscriptions", [])]


def test_a_plan_attached_at_autumn_shows_in_the_mirror(site):
    emulator, row = site
    assert plans_of(row) == []
    sent = time.monotonic()
    emulator.attach(row.customer_id, "pro")
    assert wait_until(lambda: plans_of(row) == ["pro"]), emulator.deliveries
    print(f"send -> mirror shows the plan: {(time.monotonic() - sent) * 1000:.0f} ms")
    emulator.wait_for_deliveries(2)  # billing.updated, then the legacy customer.products.updated
    assert wait_until(lambda: not WebhookEvent.objects.exclude(state="processed").exists())
    types = sorted(WebhookEvent.objects.values_list("type", "state"))
    assert types == [("billing.updated", "processed"), ("customer.products.updated", "processed")]
    assert all(delivery.status == 200 for delivery in emulator.deliveries)


def test_a_replayed_delivery_changes_nothing(site):
    emulator, row = site
    message = emulator.send_event("billing.updated", {"customer_id": row.customer_id, "plan_changes": []})
    assert wait_until(lambda: WebhookEvent.objects.filter(svix_id=message.id, state="processed").exists())
    emulator.replay(message.id)
    emulator.wait_for_deliveries(2)
    assert WebhookEvent.objects.filter(svix_id=message.id).count() == 1
    assert [delivery.status for delivery in emulator.deliveries] == [200, 200]


def test_a_delivery_signed_with_another_secret_is_refused_and_retried(site, live_server):
    emulator, row = site
    emulator.add_webhook(f"{live_server.url}/autumn/webhooks/", make_webhook_secret())  # a forger's
    emulator.send_event("billing.updated", {"customer_id": row.customer_id, "plan_changes": []})
    assert wait_until(lambda: sum(d.status == 400 for d in emulator.deliveries) >= 2)  # retried by Svix
    assert WebhookEvent.objects.count() == 1  # only the genuine endpoint's delivery was stored
