"""The emulator's billing (attach, cancel, expire) and the webhooks it sends:
signed as Svix signs them, retried on non-2xx with the same svix-id, and
delivered over HTTP from a background thread or in-process to Django."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from autumn_django.emulator import BillingError, Emulator, Plan
from autumn_django.emulator.billing import add_month
from autumn_django.emulator.cli import add_arguments, build_emulator
from autumn_django.emulator.webhooks import COMPRESSED_SCHEDULE, SVIX_SCHEDULE, standard_headers
from autumn_django.testing import django_transport, emulate, make_secret_key, make_webhook_secret

KEY = make_secret_key()
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW_MS = int(NOW * 1000)
FAST = (0, 0.01, 0.01, 0.01)  # the retry schedule of these tests: 4 attempts, 10 ms apart


def call(emulator, route, body):
    headers = {"Authorization": f"Bearer {KEY}", "x-api-version": "2.1", "Content-Type": "application/json"}
    return emulator.handle("POST", f"/v1/{route}", headers, json.dumps(body).encode())


def verify(secret, delivery_or_request):
    """What a receiver does: standardwebhooks' verify, with svix-* renamed."""
    headers, body = delivery_or_request
    return Webhook(secret).verify(body, standard_headers(headers))


class Receiver:
    """A webhook endpoint on a loopback port: records each request and answers
    with the scripted statuses (then 200); ``gate``, when set, holds each
    answer until it is opened."""

    def __init__(self, statuses=(), gate=None):
        self.statuses = deque(statuses)
        self.gate = gate
        self.requests = []  # (headers, body) in arrival order
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(5)
                status = receiver.statuses.popleft() if receiver.statuses else 200
                location = {"Location": receiver.other_url} if 300 <= status < 400 else {}
                self.send_response(status)
                for name, value in location.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/autumn/webhooks"
        self.other_url = ""
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receivers = []

    def make(statuses=(), gate=None):
        receivers.append(Receiver(statuses, gate))
        return receivers[-1]

    yield make
    for one in receivers:
        one.close()


@pytest.fixture
def secret():
    return make_webhook_secret()


@pytest.fixture
def emulator():
    emulator = Emulator(
        plans=["pro", Plan("credits", one_off=True)], clock=lambda: NOW, webhook_schedule=FAST
    )
    emulator.add_customer(id="42", email="jane@example.com")
    yield emulator
    emulator.close()


# --- attach, cancel, expire ------------------------------------------------------


def test_billing_attach_activates_the_plan_at_once_for_a_month(emulator):
    response = call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"})
    assert response.status == 200
    assert response.json["success"] is True and response.json["code"] == "plan_attached"
    assert (response.json["customer_id"], response.json["plan_id"]) == ("42", "pro")
    assert response.json["payment_url"] is None  # no Stripe, no checkout
    (subscription,) = emulator.customer("42")["subscriptions"]
    assert subscription["plan_id"] == "pro" and subscription["status"] == "active"
    assert subscription["current_period_start"] == subscription["started_at"] == NOW_MS
    assert subscription["current_period_end"] == NOW_MS + 31 * 24 * 3600 * 1000  # January has 31 days
    assert subscription["canceled_at"] is None and subscription["expires_at"] is None
    assert emulator.customers()[0]["subscriptions"][0]["status"] == "active"  # customers.list shows it too


def test_a_month_is_a_calendar_month_clamped_to_its_last_day():
    def ms(*date):
        return int(datetime(*date, tzinfo=timezone.utc).timestamp() * 1000)

    assert add_month(ms(2026, 1, 31, 12)) == ms(2026, 2, 28, 12)
    assert add_month(ms(2026, 12, 15)) == ms(2027, 1, 15)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"customer_id": "nobody", "plan_id": "pro"}, "customer_not_found", "Customer nobody not found"),
        ({"customer_id": "42", "plan_id": "gold"}, "product_not_found", "Product gold not found"),
    ],
)
def test_an_unknown_customer_or_plan_is_a_404(emulator, body, code, message):
    response = call(emulator, "billing.attach", body)
    assert (response.status, response.json["code"], response.json["message"]) == (404, code, message)
    assert emulator.customer("42")["subscriptions"] == []
    assert emulator.messages == []  # nothing changed, nothing sent


def test_attach_needs_both_ids_and_an_attached_plan_is_a_409(emulator):
    response = call(emulator, "billing.attach", {"customer_id": "42"})
    assert (response.status, response.json["code"]) == (400, "invalid_inputs")
    assert "plan_id" in response.json["message"]
    assert call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"}).status == 200
    again = call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"})
    assert (again.status, again.json["code"]) == (409, "plan_already_attached")
    with pytest.raises(BillingError) as raised:
        emulator.attach("42", "pro")
    assert (raised.value.status, raised.value.code) == (409, "plan_already_attached")
    assert len(emulator.customer("42")["subscriptions"]) == 1


def test_cancel_keeps_the_plan_active_until_the_end_of_its_period(emulator):
    emulator.attach("42", "pro")
    customer = emulator.cancel("42", "pro")
    (subscription,) = customer["subscriptions"]
    assert subscription["status"] == "active"
    assert subscription["canceled_at"] == NOW_MS
    assert subscription["expires_at"] == subscription["current_period_end"]
    assert emulator.customer("42") == customer


def test_cancel_immediately_expires_the_plan_now(emulator):
    emulator.attach("42", "pro")
    (subscription,) = emulator.cancel("42", "pro", immediately=True)["subscriptions"]
    assert (subscription["status"], subscription["canceled_at"], subscription["expires_at"]) == (
        "expired",
        NOW_MS,
        NOW_MS,
    )


def test_expire_ends_the_plan_and_a_new_attach_starts_it_again(emulator):
    emulator.attach("42", "pro")
    emulator.cancel("42", "pro")
    (subscription,) = emulator.expire("42", "pro")["subscriptions"]
    assert subscription["status"] == "expired" and subscription["expires_at"] == NOW_MS
    with pytest.raises(BillingError, match="does not have an active plan pro") as raised:
        emulator.expire("42", "pro")
    assert (raised.value.status, raised.value.code) == (404, "cus_product_not_found")
    (again,) = emulator.attach("42", "pro")["subscriptions"]
    assert again["status"] == "active" and again["canceled_at"] is None


def test_attach_of_a_canceled_plan_renews_it(emulator):
    emulator.attach("42", "pro")
    emulator.cancel("42", "pro")
    (subscription,) = emulator.attach("42", "pro")["subscriptions"]
    assert (subscription["status"], subscription["canceled_at"], subscription["expires_at"]) == (
        "active",
        None,
        None,
    )


def test_a_one_off_plan_is_a_purchase(emulator):
    customer = emulator.attach("42", "credits")
    assert customer["subscriptions"] == []
    assert [purchase["plan_id"] for purchase in customer["purchases"]] == ["credits"]
    assert emulator.expire("42", "credits")["purchases"] == []


# --- the events -------------------------------------------------------------------


def test_each_change_sends_billing_updated_and_customer_products_updated(emulator, receiver, secret):
    endpoint = receiver()
    emulator.add_webhook(endpoint.url, secret)
    emulator.attach("42", "pro")
    emulator.cancel("42", "pro")
    emulator.expire("42", "pro")
    emulator.wait_for_deliveries(6)
    bodies = [json.loads(body) for _, body in endpoint.requests]
    updates = [body["data"] for body in bodies if body["type"] == "billing.updated"]
    legacy = [body["data"] for body in bodies if body["type"] == "customer.products.updated"]
    assert [change["plan_changes"][0]["action"] for change in updates] == ["activated", "updated", "expired"]
    activated = updates[0]
    assert set(activated) == {"customer_id", "entity_id", "plan_changes", "previous_attributes", "tags"}
    assert (activated["customer_id"], activated["entity_id"], activated["tags"]) == ("42", None, [])
    assert activated["previous_attributes"] == {}
    subscription = activated["plan_changes"][0]["subscription"]
    assert set(subscription) == {
        "plan_id",
        "status",
        "past_due",
        "started_at",
        "canceled_at",
        "expires_at",
        "trial_ends_at",
        "current_period_start",
        "current_period_end",
    }
    assert (subscription["plan_id"], subscription["status"], subscription["started_at"]) == (
        "pro",
        "active",
        NOW_MS,
    )
    assert updates[1]["previous_attributes"] == {"canceled_at": None, "expires_at": None}
    assert updates[1]["plan_changes"][0]["subscription"]["canceled_at"] == NOW_MS
    assert updates[2]["plan_changes"][0]["subscription"]["status"] == "expired"
    assert updates[2]["previous_attributes"]["status"] == "active"
    assert [event["scenario"] for event in legacy] == ["new", "cancel", "expired"]
    assert legacy[0]["customer"]["id"] == "42" and legacy[0]["entity"] is None
    assert legacy[0]["customer"]["subscriptions"][0]["status"] == "active"
    assert legacy[0]["updated_product"]["id"] == "pro"


def test_a_one_off_plan_is_sent_as_a_purchase(emulator, receiver, secret):
    endpoint = receiver()
    emulator.add_webhook(endpoint.url, secret)
    emulator.attach("42", "credits")
    emulator.wait_for_deliveries(2)
    data = next(json.loads(body)["data"] for _, body in endpoint.requests if b"billing.updated" in body)
    assert data["plan_changes"] == [
        {"action": "activated", "purchase": {"plan_id": "credits", "status": "active", "expires_at": None}}
    ]


def test_events_are_signed_as_svix_signs_them(emulator, receiver, secret):
    endpoint = receiver()
    emulator.add_webhook(endpoint.url, secret)
    call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"})
    emulator.wait_for_deliveries(2)
    for headers, body in endpoint.requests:
        assert verify(secret, (headers, body))["type"] in ("billing.updated", "customer.products.updated")
        assert headers["svix-id"].startswith("msg_") and headers["content-type"] == "application/json"
        # Svix's scheme, computed independently: HMAC-SHA256 of "id.timestamp.body"
        # keyed with the base64-decoded secret after whsec_.
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{headers['svix-id']}.{headers['svix-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert f"v1,{expected}" in headers["svix-signature"].split(" ")
    with pytest.raises(WebhookVerificationError):
        verify(make_webhook_secret(), endpoint.requests[0])  # another secret does not verify


def test_non_2xx_answers_are_retried_with_the_same_svix_id_until_a_2xx(emulator, receiver, secret):
    endpoint = receiver(statuses=[500, 404])
    emulator.add_webhook(endpoint.url, secret)
    message = emulator.send_event("billing.updated", {"customer_id": "42"})
    emulator.wait_for_deliveries()  # until nothing is left to try
    assert [(d.attempt, d.status) for d in emulator.deliveries] == [(1, 500), (2, 404), (3, 200)]
    assert {headers["svix-id"] for headers, _ in endpoint.requests} == {message.id}
    assert {d.message_id for d in emulator.deliveries} == {message.id}
    assert all(
        verify(secret, request) == {"type": "billing.updated", "data": {"customer_id": "42"}}
        for request in endpoint.requests
    )
    assert len(endpoint.requests) == 3  # the 200 ended it


def test_retries_stop_at_the_end_of_the_schedule(receiver, secret):
    endpoint = receiver(statuses=[503] * 10)
    emulator = Emulator(webhook_url=endpoint.url, webhook_secret=secret, webhook_schedule=(0, 0.01, 0.01))
    emulator.send_event("customer.products.updated", {})
    deliveries = emulator.wait_for_deliveries()
    assert [(d.attempt, d.status, d.ok) for d in deliveries] == [
        (1, 503, False),
        (2, 503, False),
        (3, 503, False),
    ]
    assert len(endpoint.requests) == 3
    emulator.close()


def test_connection_errors_are_retried_and_recorded(secret):
    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/hooks"
    emulator = Emulator(webhook_url=url, webhook_secret=secret, webhook_schedule=(0, 0.01))
    emulator.send_event("billing.updated", {})
    deliveries = emulator.wait_for_deliveries()
    assert [(d.attempt, d.status, d.url) for d in deliveries] == [(1, None, url), (2, None, url)]
    assert all(d.error for d in deliveries)
    emulator.close()


def test_a_redirect_is_a_failed_attempt_not_followed(emulator, receiver, secret):
    endpoint, elsewhere = receiver(statuses=[307]), receiver()
    endpoint.other_url = elsewhere.url
    emulator.add_webhook(endpoint.url, secret)
    emulator.send_event("billing.updated", {})
    deliveries = emulator.wait_for_deliveries()
    assert [(d.status, d.url) for d in deliveries] == [(307, endpoint.url), (200, endpoint.url)]
    assert elsewhere.requests == []  # only ever the configured URL


def test_the_request_that_caused_an_event_does_not_wait_for_its_delivery(emulator, receiver, secret):
    gate = threading.Event()
    endpoint = receiver(gate=gate)
    emulator.add_webhook(endpoint.url, secret)
    response = call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"})
    assert response.status == 200  # answered while the receiver still holds the delivery
    assert endpoint.arrived.wait(5) and emulator.deliveries == []
    gate.set()
    assert [d.status for d in emulator.wait_for_deliveries(2)] == [200, 200]


def test_a_replay_keeps_the_svix_id_and_is_signed_again(emulator, receiver, secret):
    endpoint = receiver()
    emulator.add_webhook(endpoint.url, secret)
    message = emulator.send_event("billing.updated", {"customer_id": "42"})
    emulator.wait_for_deliveries(1)
    assert emulator.replay(message.id) is message
    emulator.wait_for_deliveries(2)
    (first_headers, first_body), (second_headers, second_body) = endpoint.requests
    assert first_headers["svix-id"] == second_headers["svix-id"] == message.id
    assert first_body == second_body == message.body.encode()
    assert verify(secret, endpoint.requests[1])["data"] == {"customer_id": "42"}
    with pytest.raises(KeyError):
        emulator.replay("msg_unknown")


def test_reset_forgets_messages_and_deliveries_but_keeps_the_endpoints(emulator, receiver, secret):
    endpoint = receiver()
    emulator.add_webhook(endpoint.url, secret)
    emulator.send_event("billing.updated", {})
    emulator.wait_for_deliveries(1)
    emulator.reset()
    assert (emulator.messages, emulator.deliveries) == ([], [])
    emulator.send_event("billing.updated", {})
    assert len(emulator.wait_for_deliveries(1)) == 1


def test_waiting_for_deliveries_that_do_not_come_times_out(emulator):
    with pytest.raises(TimeoutError, match="1 deliveries"):
        emulator.wait_for_deliveries(1, timeout=0.05)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"webhook_url": "http://127.0.0.1:9/x"}, "go together"),
        ({"webhook_url": "ftp://example.com/x", "webhook_secret": "whsec_" + "A" * 32}, "not an http"),
        ({"webhook_url": "http://127.0.0.1:9/x", "webhook_secret": "not-a-secret"}, "whsec_"),
        ({"webhook_url": "http://127.0.0.1:9/x", "webhook_secret": "whsec_%%%"}, "does not decode"),
    ],
)
def test_a_bad_webhook_configuration_is_refused(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        Emulator(**kwargs)


def test_the_default_schedule_is_svix_s_divided_by_a_thousand():
    assert SVIX_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert COMPRESSED_SCHEDULE == (0, 0.005, 0.3, 1.8, 7.2, 18, 36, 36)


# --- in-process delivery to Django ---------------------------------------------------

SECRET = make_webhook_secret()
received = []
answers = deque()


@csrf_exempt
def webhook_view(request):
    payload = Webhook(SECRET).verify(request.body, standard_headers(request.headers))
    received.append((request.headers["svix-id"], payload))
    return HttpResponse(status=answers.popleft() if answers else 204)


urlpatterns = [path("hooks/autumn/", webhook_view)]


@pytest.fixture
def django_receiver():
    received.clear()
    answers.clear()
    yield received
    received.clear()
    answers.clear()


@pytest.mark.urls(__name__)
def test_the_fixture_delivers_in_process_to_the_site(autumn_emulator, django_receiver):
    autumn_emulator.add_plan("pro")
    autumn_emulator.add_customer(id="42")
    autumn_emulator.add_webhook("/hooks/autumn/", SECRET, transport=django_transport())
    answers.extend([500])
    autumn_emulator.attach("42", "pro")  # delivered before attach returns
    assert [payload["type"] for _, payload in django_receiver] == [
        "billing.updated",
        "customer.products.updated",
    ]
    assert [(d.type, d.status) for d in autumn_emulator.deliveries] == [
        ("billing.updated", 500),
        ("customer.products.updated", 204),
    ]
    retried = autumn_emulator.retry_webhooks()  # the 500 is retried when the test says
    assert [(d.type, d.attempt, d.status) for d in retried] == [("billing.updated", 2, 204)]
    assert django_receiver[2][0] == django_receiver[0][0]  # the same svix-id
    assert autumn_emulator.retry_webhooks() == []


@pytest.mark.urls(__name__)
def test_emulate_takes_a_webhook_path(django_receiver):
    with emulate(webhook_path="/hooks/autumn/", webhook_secret=SECRET) as emulator:
        message = emulator.send_event("billing.updated", {"customer_id": "7"})
        assert django_receiver == [(message.id, {"type": "billing.updated", "data": {"customer_id": "7"}})]
        emulator.replay(message.id)
        assert [svix_id for svix_id, _ in django_receiver] == [message.id, message.id]


@pytest.mark.urls(__name__)
def test_a_view_that_raises_is_a_failed_attempt(autumn_emulator, django_receiver):
    autumn_emulator.add_webhook("/hooks/autumn/", make_webhook_secret(), transport=django_transport())
    autumn_emulator.send_event("billing.updated", {})  # signed with another secret: verify raises
    (delivery,) = autumn_emulator.deliveries
    assert delivery.status is None and "WebhookVerificationError" in delivery.error


# --- the command line ---------------------------------------------------------------


def parse(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_cli_flags_configure_the_webhook(receiver, secret):
    endpoint = receiver(statuses=[500])
    emulator = build_emulator(
        parse(
            "--plan",
            "pro",
            "--webhook-url",
            endpoint.url,
            "--webhook-secret",
            secret,
            "--webhook-speedup",
            "1e6",
        )
    )
    assert emulator.webhooks.schedule == tuple(wait / 1e6 for wait in SVIX_SCHEDULE)
    emulator.add_customer(id="42")
    assert call(emulator, "billing.attach", {"customer_id": "42", "plan_id": "pro"}).status == 200
    deliveries = emulator.wait_for_deliveries()
    assert sorted((d.type, d.attempt, d.status) for d in deliveries) == [
        ("billing.updated", 1, 500),
        ("billing.updated", 2, 200),
        ("customer.products.updated", 1, 200),
    ]
    assert all(verify(secret, request) for request in endpoint.requests)
    emulator.close()


def test_the_cli_makes_a_secret_when_none_is_given_and_refuses_bad_ones():
    options = parse("--webhook-url", "http://127.0.0.1:9/hooks")
    emulator = build_emulator(options)
    assert options.webhook_secret.startswith("whsec_")
    assert emulator.webhooks.endpoints[0].secret == options.webhook_secret
    with pytest.raises(SystemExit, match="--webhook-secret"):
        build_emulator(parse("--webhook-url", "http://127.0.0.1:9/hooks", "--webhook-secret", "nope"))
    with pytest.raises(SystemExit, match="--webhook-url"):
        build_emulator(parse("--webhook-url", "file:///etc/passwd"))
    with pytest.raises(SystemExit, match="needs --webhook-url"):
        build_emulator(parse("--webhook-secret", make_webhook_secret()))


@pytest.mark.http
def test_python_m_autumn_django_emulator_sends_webhooks(receiver, secret):
    endpoint = receiver()
    process = subprocess.Popen(
        [sys.executable, "-m", "autumn_django.emulator", "--port", "0", "--plan", "pro"]
        + ["--webhook-url", endpoint.url, "--webhook-secret", secret],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().split(" at ")[1].split(" ")[0]
        assert endpoint.url in process.stdout.readline()
        headers = {"Authorization": f"Bearer {KEY}", "x-api-version": "2.1"}
        created = requests.post(
            f"{url}/v1/customers.get_or_create", json={"customer_id": "1"}, headers=headers
        )
        assert created.status_code == 200
        attached = requests.post(
            f"{url}/v1/billing.attach",
            json={"customer_id": "1", "plan_id": "pro"},
            headers=headers,
            timeout=5,
        )
        assert attached.status_code == 200 and attached.json()["code"] == "plan_attached"
        assert endpoint.arrived.wait(5)
    finally:
        process.send_signal(subprocess.signal.SIGINT)
        process.wait(timeout=10)
    assert verify(secret, endpoint.requests[0])["data"]["customer_id"] == "1"
