"""From Autumn's side to the site's mirror: the emulator (over HTTP) attaches
a plan, signs the billing.updated event as Svix does and delivers it to the
example site served by a live server; the mirror then shows the plan, and
so does the Billing page, fetched through the live server."""

from __future__ import annotations

import time

import pytest
import requests
from django.utils import timezone

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


@pytest.fixture
def billing_page(live_server, client, site):
    """The user's Billing page, as their browser gets it from the live server."""
    _, row = site
    client.force_login(row.source)
    browser = requests.Session()
    browser.trust_env = False
    browser.cookies.set("sessionid", client.cookies["sessionid"].value)

    def get():
        response = browser.get(f"{live_server.url}/billing/", timeout=10, allow_redirects=False)
        assert response.status_code == 200, response.status_code
        return response.text

    yield get
    browser.close()


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


def test_a_plan_attached_at_autumn_shows_in_the_mirror_and_on_the_billing_page(site, billing_page):
    emulator, row = site
    assert plans_of(row) == [] and not row.has_plan("pro")
    loading = time.monotonic()
    assert 'data-plan="pro"' not in billing_page()
    load = time.monotonic() - loading  # one page load, to read the time below by
    seen = {}

    def arrived():
        # The mirror (the database), then the page (the live server), each
        # timed from the send when first seen with the plan.
        if "mirror" not in seen and plans_of(row) == ["pro"]:
            seen["mirror"] = time.monotonic()
        if "page" not in seen and 'data-plan="pro"' in billing_page():
            seen["page"] = time.monotonic()
        return len(seen) == 2

    sent = time.monotonic()
    emulator.attach(row.customer_id, "pro")
    assert wait_until(arrived), (seen, emulator.deliveries)
    print(f"send -> mirror shows the plan: {(seen['mirror'] - sent) * 1000:.0f} ms")
    print(f"send -> billing page shows the plan: {(seen['page'] - sent) * 1000:.0f} ms "
          f"(one load of the page alone: {load * 1000:.0f} ms)")  # fmt: skip
    row.refresh_from_db()
    assert row.has_plan("pro") and row.active_plan_ids == ["pro"]
    assert list(row.plans.values_list("plan_id", "status")) == [("pro", "active")]
    page = billing_page()
    renews = timezone.localtime(row.plans.get().current_period_end)  # the period Autumn gave
    assert f"renews on {renews:%-d %b %Y}" in page
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
