"""Webhooks from Autumn: a signed delivery is stored and acknowledged at
once, processed in a task that refreshes the customer's mirror row, and
nothing forged, stale, replayed or broken is stored or lost."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from django.urls import reverse
from standardwebhooks.webhooks import Webhook

from autumn_django import signals, webhooks
from autumn_django.models import Customer, WebhookEvent

pytestmark = pytest.mark.django_db

URL = reverse("autumn_django:webhook")
SECRET = "whsec_" + base64.b64encode(b"autumn-django-tests-signing-key!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-signing-key-for-rotation").decode()


@pytest.fixture(autouse=True)
def secrets_configured(autumn_settings):
    autumn_settings(WEBHOOK_SECRETS=[SECRET])


def signed(payload, *, secret=SECRET, msg_id=None, at=None):
    """A delivery as Svix makes it: the body and its svix-* headers."""
    body = json.dumps(payload, separators=(",", ":"))
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    at = at or datetime.now(tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id, at, body)
    headers = {"svix-id": msg_id, "svix-timestamp": str(int(at.timestamp())), "svix-signature": signature}
    return body, headers


def deliver(client, payload=None, *, body=None, headers=None, **signing):
    if body is None:
        body, made = signed(payload, **signing)
        headers = {**made, **(headers or {})}
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def billing_updated(customer_id="42", plan_id="pro"):
    return {
        "type": "billing.updated",
        "data": {
            "customer_id": customer_id,
            "entity_id": None,
            "plan_changes": [
                {
                    "action": "activated",
                    "subscription": {"plan_id": plan_id, "status": "active", "past_due": False},
                }
            ],
            "previous_attributes": {},
            "tags": [],
        },
    }


@pytest.fixture
def mirrored(autumn_emulator, make_user, commit):
    """A user mirrored as customer "<pk>" (no plan yet)."""
    with commit():
        user = make_user()
    autumn_emulator.add_plan("pro")
    row = Customer.objects.get(customer_id=str(user.pk))
    return user, row


# --- receiving --------------------------------------------------------------------


def test_a_signed_delivery_is_stored_and_acknowledged(
    client, autumn_emulator, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as enqueued:
        response = deliver(client, billing_updated())
    assert response.status_code == 200 and response.json() == {"received": True, "duplicate": False}
    event = WebhookEvent.objects.get()
    assert (event.type, event.customer_id, event.state) == ("billing.updated", "42", "pending")
    assert event.payload["data"]["plan_changes"][0]["subscription"]["plan_id"] == "pro"
    assert len(enqueued) == 1  # processing waits for the commit, and for a task


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": OTHER_SECRET}, "No matching signature"),
        ({"at": datetime.now(tz=timezone.utc) - timedelta(minutes=6)}, "too old"),
        ({"at": datetime.now(tz=timezone.utc) + timedelta(minutes=6)}, "too new"),
    ],
)
def test_a_forged_or_stale_delivery_is_a_400_and_nothing_is_stored(client, change, reason):
    response = deliver(client, billing_updated(), **change)
    assert response.status_code == 400 and reason in response.json()["error"]
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"svix-signature": ""},
        {"svix-signature": "v1"},
        {"svix-signature": "v1,not-base64!!"},
        {"svix-timestamp": "soon"},
        {"svix-id": ""},
    ],
)
def test_a_malformed_header_is_a_400_and_nothing_is_stored(client, headers):
    response = deliver(client, billing_updated(), headers=headers)
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_a_tampered_body_is_refused(client):
    body, headers = signed(billing_updated("42"))
    response = deliver(client, body=body.replace('"42"', '"43"'), headers=headers)
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_without_configured_secrets_every_delivery_is_refused(client, autumn_settings):
    autumn_settings(WEBHOOK_SECRETS=[])
    response = deliver(client, billing_updated())
    assert response.status_code == 400 and "WEBHOOK_SECRETS" in response.json()["error"]


def test_during_a_rotation_the_old_and_the_new_secret_are_both_accepted(client, autumn_settings):
    autumn_settings(WEBHOOK_SECRETS=[OTHER_SECRET, SECRET])
    assert deliver(client, billing_updated(), secret=SECRET).status_code == 200
    assert deliver(client, billing_updated(), secret=OTHER_SECRET).status_code == 200
    assert WebhookEvent.objects.count() == 2


def test_a_repeated_delivery_is_a_200_that_does_nothing(client, django_capture_on_commit_callbacks):
    body, headers = signed(billing_updated(), msg_id="msg_same")
    deliver(client, body=body, headers=headers)
    with django_capture_on_commit_callbacks() as enqueued:
        again = deliver(client, billing_updated(), msg_id="msg_same")  # Svix's retry: new signature, same id
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert WebhookEvent.objects.count() == 1 and enqueued == []


def test_an_unknown_type_is_stored_as_ignored_and_acknowledged(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as enqueued:
        response = deliver(client, {"type": "customer.teleported", "data": {"customer_id": "42"}})
    assert response.status_code == 200
    assert WebhookEvent.objects.get().state == "ignored" and enqueued == []


def test_only_post_is_accepted(client):
    assert client.get(URL).status_code == 405


def test_a_body_over_the_limit_is_refused_unread(client):
    body, headers = signed({"type": "billing.updated", "data": {"pad": "x" * webhooks.MAX_BODY}})
    assert deliver(client, body=body, headers=headers).status_code == 413
    assert not WebhookEvent.objects.exists()


def test_the_endpoint_needs_no_csrf_token(autumn_emulator):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert deliver(strict, billing_updated()).status_code == 200


# --- processing ---------------------------------------------------------------------


def test_processing_refreshes_the_customers_row_from_autumn(client, autumn_emulator, mirrored, commit):
    user, row = mirrored
    assert autumn_emulator.customer(row.customer_id)["subscriptions"] == []
    _attach(autumn_emulator, row.customer_id, "pro")  # a checkout at Autumn, then its event
    received = []
    signals.billing_updated.connect(lambda sender, **kw: received.append(kw), weak=False, dispatch_uid="t1")
    try:
        with commit():
            deliver(client, billing_updated(row.customer_id))
    finally:
        signals.billing_updated.disconnect(dispatch_uid="t1")
    event = WebhookEvent.objects.get()
    assert event.state == "processed" and event.processed_at is not None
    row.refresh_from_db()
    assert [sub["plan_id"] for sub in row.data["subscriptions"]] == ["pro"]
    assert received[0]["customer"].pk == row.pk and received[0]["event"].pk == event.pk


def test_a_burst_for_one_customer_costs_one_fetch(client, autumn_emulator, mirrored):
    _, row = mirrored
    for _ in range(10):  # all received before any is processed (a worker's queue)
        deliver(client, billing_updated(row.customer_id))
    events = list(WebhookEvent.objects.order_by("pk").values_list("pk", flat=True))
    before = len(autumn_emulator.requests("customers.get"))
    for pk in events:
        webhooks.process(pk)
    assert len(autumn_emulator.requests("customers.get")) - before == 1
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"processed"}


def test_a_burst_of_100_events_for_10_customers_costs_at_most_10_fetches(
    client, autumn_emulator, make_user, commit
):
    with commit():
        users = [make_user(f"u{n}") for n in range(10)]
    rows = [Customer.objects.of(user).get() for user in users]
    for number in range(100):
        deliver(client, billing_updated(rows[number % 10].customer_id))
    before = len(autumn_emulator.requests("customers.get"))
    for pk in WebhookEvent.objects.order_by("?").values_list("pk", flat=True):
        webhooks.process(pk)
    assert len(autumn_emulator.requests("customers.get")) - before <= 10


def test_an_event_for_a_customer_without_a_row_is_recorded_for_pull(client, autumn_emulator):
    deliver(client, billing_updated("made-in-dashboard"))
    event = webhooks.process(WebhookEvent.objects.get().pk)
    assert event.state == "processed" and "autumn_sync --pull" in event.last_error
    assert autumn_emulator.requests("customers.get") == []


def test_a_failed_processing_is_kept_with_its_error_and_succeeds_on_retry(client, autumn_emulator, mirrored):
    _, row = mirrored
    deliver(client, billing_updated(row.customer_id))
    pk = WebhookEvent.objects.get().pk
    autumn_emulator.fail_next(4, "customers.get", status=503)  # the first try and its 3 retries
    failed = webhooks.process(pk)
    assert failed.state == "failed" and failed.attempts == 1 and "503" in failed.last_error
    assert failed.next_attempt_at is not None
    done = webhooks.process(pk)
    assert done.state == "processed" and done.attempts == 2 and done.last_error == ""


def test_a_site_receiver_that_raises_fails_the_event_for_a_retry(client, autumn_emulator, mirrored):
    _, row = mirrored
    deliver(client, billing_updated(row.customer_id))

    def broken(sender, **kwargs):
        raise RuntimeError("the site's handler broke")

    signals.billing_updated.connect(broken, weak=False, dispatch_uid="broken")
    try:
        event = webhooks.process(WebhookEvent.objects.get().pk)
    finally:
        signals.billing_updated.disconnect(dispatch_uid="broken")
    assert event.state == "failed" and "the site's handler broke" in event.last_error


def test_a_processed_event_is_not_processed_again(client, autumn_emulator, mirrored):
    _, row = mirrored
    deliver(client, billing_updated(row.customer_id))
    pk = WebhookEvent.objects.get().pk
    webhooks.process(pk)
    before = len(autumn_emulator.requests())
    Customer.objects.filter(pk=row.pk).update(synced_at=None)  # would need a fetch if processed again
    webhooks.process(pk)
    assert len(autumn_emulator.requests()) == before


def test_the_legacy_products_event_names_its_customer_in_data_customer(client):
    deliver(
        client, {"type": "customer.products.updated", "data": {"scenario": "new", "customer": {"id": "7"}}}
    )
    assert WebhookEvent.objects.get().customer_id == "7"


def test_the_signing_secret_setting_is_checked(autumn_settings):
    from autumn_django.checks import check_settings

    autumn_settings(WEBHOOK_SECRETS=["whsec_", "sk_live_oops"])
    messages = [m.msg for m in check_settings()]
    assert any('AUTUMN["WEBHOOK_SECRETS"]' in m and "malformed" in m for m in messages)
    assert not any("sk_live_oops" in m for m in messages)
    autumn_settings(WEBHOOK_SECRETS="whsec_abc")
    assert any("must be a list" in m.msg for m in check_settings())


def _attach(emulator, customer_id, plan_id):
    """A plan attached at Autumn, as a checkout would: the customer as
    Autumn then holds it, with an active subscription to ``plan_id``."""
    current = emulator.customer(customer_id)
    from autumn_django.client import get_client

    get_client().delete_customer(customer_id)
    fields = {name: current[name] for name in ("name", "email", "metadata", "created_at")}
    emulator.add_customer(id=customer_id, plans=[plan_id], **fields)


def test_an_event_whose_task_was_lost_or_whose_retry_is_due_is_processed_by_the_sweep(
    client, autumn_emulator, mirrored
):
    from autumn_django import tasks

    _, row = mirrored
    deliver(client, billing_updated(row.customer_id))  # not committed: its task never ran
    lost = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(pk=lost.pk).update(received_at=lost.received_at - tasks.STALE_AFTER * 2)
    assert tasks.recover_stale(force=True) == 1  # ImmediateBackend: processed now
    assert WebhookEvent.objects.get(pk=lost.pk).state == "processed"


# --- the admin ----------------------------------------------------------------------

EVENTS = reverse("admin:autumn_django_webhookevent_changelist")


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_user("ops", "ops@example.com", "x", is_staff=True)
    client.force_login(user)
    return user


def grant(user, *codenames):
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def test_the_events_page_needs_the_view_permission(client, staff):
    assert client.get(EVENTS).status_code == 403
    grant(staff, "view_webhookevent")
    assert client.get(EVENTS).status_code == 200


def test_the_events_page_lists_and_filters_what_autumn_sent(client, staff):
    grant(staff, "view_webhookevent")
    deliver(client, billing_updated("42"))
    deliver(client, {"type": "customer.teleported", "data": {}})
    listed = client.get(EVENTS, {"state__exact": "ignored"}).context["cl"].result_list
    assert [event.type for event in listed] == ["customer.teleported"]
    assert len(client.get(EVENTS).context["cl"].result_list) == 2


def test_an_event_page_is_read_only(client, staff):
    grant(staff, "view_webhookevent", "change_webhookevent")
    deliver(client, billing_updated("42"))
    url = reverse("admin:autumn_django_webhookevent_change", args=[WebhookEvent.objects.get().pk])
    page = client.get(url)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.post(url, {"state": "processed"}).status_code == 403


def test_process_again_retries_a_failed_event_and_needs_the_change_permission(
    client, staff, autumn_emulator, mirrored
):
    _, row = mirrored
    deliver(client, billing_updated(row.customer_id))
    event = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(pk=event.pk).update(state="failed", last_error="boom")
    form = {"action": "process_again", "_selected_action": [event.pk]}
    grant(staff, "view_webhookevent")
    client.post(EVENTS, form)
    assert WebhookEvent.objects.get().state == "failed"  # no change permission: not run
    grant(staff, "change_webhookevent")
    response = client.post(EVENTS, form, follow=True)
    assert WebhookEvent.objects.get().state == "processed"
    assert "Processed again: 1; failed: 0" in response.content.decode()
