"""The client against the in-process emulator: every operation, as the
contract describes it."""

import json
import time

import pytest
import requests
import responses

from autumn_django import __version__
from autumn_django.client import AutumnClient, get_client
from autumn_django.emulator import Plan
from autumn_django.exceptions import Conflict, InvalidRequest, NotFound
from autumn_django.testing import emulate, make_secret_key

REQUIRED_KEYS = {
    "id",
    "name",
    "email",
    "created_at",
    "fingerprint",
    "stripe_id",
    "env",
    "metadata",
    "send_email_receipts",
    "subscriptions",
    "purchases",
    "balances",
    "billing_controls",
    "licenses",
    "flags",
}


def cursor_client(autumn_emulator, version="2.3"):
    from django.conf import settings

    return AutumnClient(
        settings.AUTUMN["SECRET_KEY"], base_url=settings.AUTUMN["BASE_URL"], api_version=version
    )


# --- the request itself ------------------------------------------------------


def test_every_request_carries_bearer_auth_version_json_and_user_agent():
    key = make_secret_key()
    with responses.RequestsMock() as mock:
        mock.post(
            "https://api.useautumn.com/v1/customers.get",
            json={"id": "1", "env": "sandbox", "created_at": 1_770_000_000_000, "metadata": {}},
        )
        AutumnClient(key).get_customer("1")
        headers = mock.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {key}"
    assert headers["x-api-version"] == "2.1"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith(f"autumn-django/{__version__} ")
    assert "Idempotency-Key" not in headers


def test_routes_are_the_snake_case_ones_autumn_serves(autumn_client, autumn_emulator):
    autumn_client.get_or_create_customer("1")
    autumn_client.get_customer("1")
    autumn_client.list_customers()
    autumn_client.update_customer("1", name="A")
    autumn_client.delete_customer("1")
    assert [entry.path for entry in autumn_emulator.requests()] == [
        "/v1/customers.get_or_create",
        "/v1/customers.get",
        "/v1/customers.list",
        "/v1/customers.update",
        "/v1/customers.delete",
    ]
    assert [entry.status for entry in autumn_emulator.requests()] == [200] * 5


def test_omitted_keywords_are_not_sent_and_none_is_sent_as_null(autumn_client, autumn_emulator):
    autumn_client.get_or_create_customer("1", name="Ada", email="ada@example.com")
    autumn_client.update_customer("1", name=None)
    assert autumn_emulator.requests()[-1].body == {"customer_id": "1", "name": None}
    assert autumn_emulator.customer("1")["name"] is None
    assert autumn_emulator.customer("1")["email"] == "ada@example.com"


def test_metadata_values_django_knows_how_to_encode_are_sent(autumn_client, autumn_emulator):
    import datetime
    import uuid

    pk = uuid.UUID(int=7)
    autumn_client.get_or_create_customer("1", metadata={"pk": pk, "joined": datetime.date(2026, 1, 2)})
    assert autumn_emulator.customer("1")["metadata"] == {
        "pk": str(pk),
        "joined": "2026-01-02",
    }


@pytest.mark.parametrize("bad_id", ["", "jane@example.com", "jane doe", "jane.doe", "a/b"])
def test_an_invalid_customer_id_is_refused_locally_without_a_request(autumn_client, autumn_emulator, bad_id):
    with pytest.raises(InvalidRequest) as caught:
        autumn_client.get_or_create_customer(bad_id)
    assert caught.value.status is None
    assert caught.value.code == "invalid_inputs"
    assert caught.value.message.startswith("customer_id: ")
    assert autumn_emulator.requests() == []


def test_a_null_new_customer_id_is_refused_locally(autumn_client, autumn_emulator):
    with pytest.raises(InvalidRequest, match="new_customer_id"):
        autumn_client.update_customer("1", new_customer_id=None)
    assert autumn_emulator.requests() == []


# --- customers.get_or_create ------------------------------------------------


def test_get_or_create_makes_a_customer_with_every_required_key(autumn_client):
    before = int(time.time() * 1000)
    customer = autumn_client.get_or_create_customer(
        "42", name="Jane Doe", email="jane@example.com", metadata={"django_user_id": 42}
    )
    assert REQUIRED_KEYS <= customer.keys()
    assert customer["id"] == "42"
    assert customer["env"] == "sandbox"
    assert customer["metadata"] == {"django_user_id": 42}
    assert before <= customer["created_at"] <= int(time.time() * 1000)  # milliseconds
    assert "processors" not in customer


def test_get_or_create_of_an_existing_customer_fills_only_empty_fields(autumn_client):
    autumn_client.get_or_create_customer("42", email="old@example.com", metadata={"a": 1}, fingerprint="f1")
    again = autumn_client.get_or_create_customer(
        "42",
        name="New Name",
        email="new@example.com",
        metadata={"b": 2},
        fingerprint="f2",
    )
    assert again["name"] == "New Name"  # was empty: filled
    assert again["email"] == "old@example.com"  # was set: kept
    assert again["metadata"] == {"a": 1}  # ignored
    assert again["fingerprint"] == "f1"  # ignored


def test_get_or_create_updates_send_email_receipts_of_an_existing_customer(autumn_client):
    autumn_client.get_or_create_customer("42")
    assert autumn_client.get_or_create_customer("42", send_email_receipts=True)["send_email_receipts"] is True


def test_get_or_create_without_an_id_needs_an_email(autumn_client):
    with pytest.raises(InvalidRequest) as caught:
        autumn_client.get_or_create_customer(None)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert caught.value.message == "Either customer ID or email is required"


def test_id_less_customers_are_unique_by_lower_cased_email(autumn_client, autumn_emulator):
    first = autumn_client.get_or_create_customer(None, email="Jane@Example.com")
    second = autumn_client.get_or_create_customer(None, email="jane@example.com")
    assert first["id"] is None and second["created_at"] == first["created_at"]
    assert len(autumn_emulator.customers()) == 1


def test_a_later_call_with_an_id_claims_the_id_less_customer(autumn_client, autumn_emulator):
    autumn_client.get_or_create_customer(None, email="jane@example.com")
    claimed = autumn_client.get_or_create_customer("42", email="jane@example.com")
    assert claimed["id"] == "42"
    assert [c["id"] for c in autumn_emulator.customers()] == ["42"]


def test_an_invalid_email_is_refused_by_autumn(autumn_client):
    with pytest.raises(InvalidRequest) as caught:
        autumn_client.get_or_create_customer("42", email="not-an-email")
    assert (caught.value.code, caught.value.message) == (
        "invalid_inputs",
        "email: not a valid email address",
    )


def test_an_unknown_auto_enable_plan_is_product_not_found(autumn_client):
    with pytest.raises(NotFound) as caught:
        autumn_client.get_or_create_customer("42", auto_enable_plan_id="pro")
    assert (caught.value.code, caught.value.message) == ("product_not_found", "Product pro not found")


def test_a_known_auto_enable_plan_becomes_an_active_subscription(autumn_client, autumn_emulator):
    autumn_emulator.add_plan("free")
    customer = autumn_client.get_or_create_customer("42", auto_enable_plan_id="free")
    [subscription] = customer["subscriptions"]
    assert (subscription["plan_id"], subscription["status"]) == ("free", "active")


def test_default_plans_are_attached_to_every_new_customer(autumn_client, autumn_emulator):
    autumn_emulator.add_plan(Plan("starter", default=True))
    customer = autumn_client.get_or_create_customer("42")
    assert [s["plan_id"] for s in customer["subscriptions"]] == ["starter"]
    assert customer["subscriptions"][0]["auto_enable"] is True


def test_stripe_ids_link_a_processor_and_bad_ones_are_stripe_errors(autumn_client):
    linked = autumn_client.get_or_create_customer("42", stripe_id="cus_Abc12345")
    assert linked["processors"] == {"stripe": {"id": "cus_Abc12345"}}
    with pytest.raises(InvalidRequest) as caught:
        autumn_client.get_or_create_customer("43", stripe_id="nonsense")
    assert caught.value.code == "stripe_error"
    assert caught.value.message.startswith("(Stripe Error) ")


def test_create_in_stripe_links_a_new_stripe_customer(autumn_client):
    customer = autumn_client.get_or_create_customer("42", create_in_stripe=True)
    assert customer["stripe_id"].startswith("cus_")


def test_expand_adds_the_requested_keys_only(autumn_client, autumn_emulator):
    autumn_emulator.add_plan(Plan("free", default=True))
    plain = autumn_client.get_or_create_customer("42")
    expanded = autumn_client.get_customer("42", expand=["invoices", "subscriptions.plan"])
    assert "invoices" not in plain and expanded["invoices"] == []
    assert expanded["subscriptions"][0]["plan"]["id"] == "free"
    with pytest.raises(InvalidRequest, match="expand"):
        autumn_client.get_customer("42", expand=["everything"])


# --- customers.get ----------------------------------------------------------


def test_get_returns_the_customer_or_raises_not_found(autumn_client):
    autumn_client.get_or_create_customer("42", name="Jane")
    assert autumn_client.get_customer("42")["name"] == "Jane"
    with pytest.raises(NotFound) as caught:
        autumn_client.get_customer("43")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "customer_not_found",
        "Customer 43 not found",
    )


def test_autumn_internal_ids_find_the_customer_too(autumn_client, autumn_emulator):
    autumn_client.get_or_create_customer("42")
    internal = autumn_emulator.internal_id("42")
    assert autumn_client.get_customer(internal)["id"] == "42"


# --- customers.update -------------------------------------------------------


def test_update_merges_metadata_and_a_null_value_deletes_a_key(autumn_client):
    autumn_client.get_or_create_customer("42", metadata={"a": 1, "b": 2})
    updated = autumn_client.update_customer("42", metadata={"b": None, "c": 3})
    assert updated["metadata"] == {"a": 1, "c": 3}


@pytest.mark.parametrize("metadata", [None, {}])
def test_update_with_null_or_empty_metadata_leaves_it_alone(autumn_client, metadata):
    autumn_client.get_or_create_customer("42", metadata={"a": 1})
    assert autumn_client.update_customer("42", metadata=metadata)["metadata"] == {"a": 1}


def test_update_with_an_empty_string_stores_null(autumn_client):
    autumn_client.get_or_create_customer("42", name="Jane")
    assert autumn_client.update_customer("42", name="")["name"] is None


def test_update_unlinks_stripe_with_null(autumn_client):
    autumn_client.get_or_create_customer("42", stripe_id="cus_Abc12345")
    updated = autumn_client.update_customer("42", stripe_id=None)
    assert updated["stripe_id"] is None and "processors" not in updated


def test_update_of_a_missing_customer_is_not_found(autumn_client):
    with pytest.raises(NotFound, match="customer_not_found"):
        autumn_client.update_customer("nobody", name="x")


def test_rename_moves_the_customer_to_its_new_id(autumn_client, autumn_emulator):
    autumn_client.get_or_create_customer("old", name="Jane")
    renamed = autumn_client.update_customer("old", new_customer_id="new")
    assert renamed["id"] == "new" and renamed["name"] == "Jane"
    assert autumn_emulator.customer("old") is None
    assert autumn_client.get_customer("new")["name"] == "Jane"


def test_rename_to_the_same_id_changes_nothing(autumn_client):
    autumn_client.get_or_create_customer("same")
    assert autumn_client.update_customer("same", new_customer_id="same")["id"] == "same"


def test_rename_onto_a_taken_id_is_a_conflict(autumn_client):
    autumn_client.get_or_create_customer("a")
    autumn_client.get_or_create_customer("b")
    with pytest.raises(Conflict) as caught:
        autumn_client.update_customer("a", new_customer_id="b")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        409,
        "customer_already_exists",
        "Customer with ID b already exists, can't change to this ID",
    )


# --- customers.delete -------------------------------------------------------


def test_delete_succeeds_once_then_is_not_found(autumn_client):
    autumn_client.get_or_create_customer("42")
    assert autumn_client.delete_customer("42", delete_in_stripe=False) == {"success": True}
    with pytest.raises(NotFound, match="customer_not_found"):
        autumn_client.delete_customer("42")


# --- environments -----------------------------------------------------------


def test_the_key_picks_the_environment_and_each_has_its_own_customers(autumn_client, autumn_emulator):
    from django.conf import settings

    live = AutumnClient(make_secret_key("live"), base_url=settings.AUTUMN["BASE_URL"])
    autumn_client.get_or_create_customer("42", name="Sandbox Jane")
    assert live.get_or_create_customer("42", name="Live Jane")["env"] == "live"
    assert autumn_client.get_customer("42")["name"] == "Sandbox Jane"
    assert [c["name"] for c in autumn_emulator.customers("live")] == ["Live Jane"]


# --- customers.list, offset style (2.1, 2.2) --------------------------------


def make_customers(client, count, prefix="c"):
    for number in range(count):
        client.get_or_create_customer(f"{prefix}{number}", name=f"Name {number}")


def test_offset_list_defaults_to_ten_newest_first_with_counts(autumn_client):
    make_customers(autumn_client, 12)
    page = autumn_client.list_customers()
    assert [c["id"] for c in page["list"]] == [f"c{n}" for n in range(11, 1, -1)]
    assert {
        k: page[k] for k in ("total", "total_count", "total_filtered_count", "limit", "offset", "has_more")
    } == {
        "total": 10,
        "total_count": 12,
        "total_filtered_count": 12,
        "limit": 10,
        "offset": 0,
        "has_more": True,
    }


def test_offset_has_more_is_true_whenever_the_page_is_full(autumn_client):
    make_customers(autumn_client, 4)
    assert autumn_client.list_customers(limit=4)["has_more"] is True
    assert autumn_client.list_customers(limit=4, offset=4) | {"list": None} == {
        "list": None,
        "total": 0,
        "total_count": 4,
        "total_filtered_count": 4,
        "limit": 4,
        "offset": 4,
        "has_more": False,
    }


def test_search_is_a_trimmed_case_insensitive_substring_of_id_name_or_email(autumn_client):
    autumn_client.get_or_create_customer("u1", name="Ada Lovelace", email="ada@example.com")
    autumn_client.get_or_create_customer("u2", name="Grace Hopper", email="grace@navy.mil")
    autumn_client.get_or_create_customer("lace-3")
    found = autumn_client.list_customers(search="  LACE ")
    assert sorted(c["id"] for c in found["list"]) == ["lace-3", "u1"]
    assert found["total_filtered_count"] == 2 and found["total_count"] == 3
    assert [c["id"] for c in autumn_client.list_customers(search="navy")["list"]] == ["u2"]


def test_list_filters_by_plan_and_subscription_status(autumn_client, autumn_emulator):
    autumn_emulator.add_plan("pro")
    autumn_client.get_or_create_customer("payer", auto_enable_plan_id="pro")
    autumn_client.get_or_create_customer("free")
    assert [c["id"] for c in autumn_client.list_customers(plans=[{"id": "pro"}])["list"]] == ["payer"]
    assert [c["id"] for c in autumn_client.list_customers(subscription_status="active")["list"]] == ["payer"]
    assert autumn_client.list_customers(subscription_status="scheduled")["list"] == []


@pytest.mark.parametrize("limit", [0, 1001])
def test_offset_list_limit_outside_1_to_1000_is_invalid_inputs(autumn_client, limit):
    with pytest.raises(InvalidRequest) as caught:
        autumn_client.list_customers(limit=limit)
    assert caught.value.code == "invalid_inputs"
    assert caught.value.message.startswith("limit: ")


def test_cursor_fields_are_refused_at_an_offset_version(autumn_client):
    with pytest.raises(ValueError, match="pages by offset"):
        autumn_client.list_customers(start_cursor="")


# --- customers.list, cursor style (2.3+) ------------------------------------


def test_cursor_list_defaults_to_fifty_and_follows_next_cursor(autumn_emulator):
    client = cursor_client(autumn_emulator)
    make_customers(client, 60)
    first = client.list_customers()
    assert set(first) == {"list", "next_cursor"}
    assert len(first["list"]) == 50 and first["next_cursor"]
    second = client.list_customers(start_cursor=first["next_cursor"])
    assert len(second["list"]) == 10 and second["next_cursor"] is None
    ids = [c["id"] for c in first["list"] + second["list"]]
    assert ids == [f"c{n}" for n in range(59, -1, -1)]


def test_cursor_list_sorts_ascending_and_filters_by_creation_time(autumn_emulator):
    client = cursor_client(autumn_emulator, "2026-05-13")
    for number, created in enumerate((1000, 2000, 3000)):
        autumn_emulator.add_customer(id=f"t{number}", created_at=created)
    assert [c["id"] for c in client.list_customers(sort_order="asc")["list"]] == ["t0", "t1", "t2"]
    window = client.list_customers(created_at_range={"start": 2000, "end": 3000})
    assert [c["id"] for c in window["list"]] == ["t2", "t1"]


def test_cursor_list_filters_by_processor(autumn_emulator):
    client = cursor_client(autumn_emulator)
    client.get_or_create_customer("linked", stripe_id="cus_Abc12345")
    client.get_or_create_customer("bare")
    assert [c["id"] for c in client.list_customers(processors=["stripe"])["list"]] == ["linked"]


def test_a_bad_cursor_is_invalid_cursor(autumn_emulator):
    client = cursor_client(autumn_emulator)
    with pytest.raises(InvalidRequest) as caught:
        client.list_customers(start_cursor="!!not base64!!")
    assert (caught.value.code, caught.value.message) == ("invalid_cursor", "cursor is not valid base64url")


def test_cursor_list_limit_above_1000_is_invalid_request(autumn_emulator):
    with pytest.raises(InvalidRequest) as caught:
        cursor_client(autumn_emulator).list_customers(limit=1001)
    assert caught.value.code == "invalid_request"


def test_offset_is_refused_at_a_cursor_version(autumn_emulator):
    with pytest.raises(ValueError, match="pages by cursor"):
        cursor_client(autumn_emulator).list_customers(offset=10)


# --- iter_customers ---------------------------------------------------------


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.3"])
def test_iter_customers_yields_every_customer_once(autumn_emulator, version):
    client = cursor_client(autumn_emulator, version)
    make_customers(client, 57)
    ids = [c["id"] for c in client.iter_customers(page_size=10)]
    assert sorted(ids) == sorted(f"c{n}" for n in range(57))


@pytest.mark.parametrize("version", ["2.1", "2.3"])
def test_iter_customers_yields_no_duplicates_while_customers_are_added(autumn_emulator, version):
    client = cursor_client(autumn_emulator, version)
    make_customers(client, 30)
    seen = []
    for number, customer in enumerate(client.iter_customers(page_size=7)):
        seen.append(customer["id"])
        if number % 3 == 0:  # a sign-up lands at the front while we page
            client.get_or_create_customer(f"new{number}")
    originals = [i for i in seen if i.startswith("c")]
    assert sorted(originals) == sorted(f"c{n}" for n in range(30))
    assert len(seen) == len(set(seen))


def test_iter_customers_survives_a_deletion_between_pages_at_offset_versions(autumn_emulator):
    client = cursor_client(autumn_emulator, "2.1")
    make_customers(client, 40)
    seen = []
    for customer in client.iter_customers(page_size=20):
        seen.append(customer["id"])
        if len(seen) == 5:
            client.delete_customer("c39")  # already yielded: shifts later pages up by one
    assert sorted(seen) == sorted(f"c{n}" for n in range(40))


def test_iter_customers_passes_filters_to_every_page(autumn_client):
    make_customers(autumn_client, 15, prefix="keep")
    make_customers(autumn_client, 15, prefix="drop")
    assert sorted(c["id"] for c in autumn_client.iter_customers(page_size=4, search="keep")) == sorted(
        f"keep{n}" for n in range(15)
    )


# --- the emulator fixture itself ---------------------------------------------


def test_the_fixture_points_settings_at_the_emulator(autumn_emulator):
    get_client().get_or_create_customer("42")
    assert autumn_emulator.counts["customers.get_or_create"] == 1


def test_emulate_lets_requests_to_other_hosts_through(http_emulator):
    """A request for another host reaches that host: here a real server on a
    local socket, which only a passed-through request can reach."""
    with emulate() as emulated:
        other = AutumnClient(make_secret_key(), base_url=http_emulator.url, max_retries=0)
        assert other.get_or_create_customer("42", name="Jane")["name"] == "Jane"
    assert http_emulator.emulator.customer("42")["name"] == "Jane"
    assert emulated.requests() == []


def test_a_200_that_is_not_json_is_an_api_error():
    from autumn_django.exceptions import AutumnAPIError

    with responses.RequestsMock() as mock:
        mock.post("https://api.useautumn.com/v1/customers.get", body="<html>ok</html>")
        with pytest.raises(AutumnAPIError) as caught:
            AutumnClient(make_secret_key()).get_customer("1")
    assert (caught.value.status, caught.value.code) == (200, "invalid_response")


def test_the_request_body_is_compact_json(autumn_client, autumn_emulator, monkeypatch):
    """The bytes on the wire, not a re-encoding of what the emulator decoded."""
    sent = []
    real_send = requests.Session.send

    def send(session, request, **kwargs):
        sent.append(request.body)
        return real_send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    autumn_client.get_or_create_customer("42", name="Jane")
    assert sent == [b'{"customer_id":"42","name":"Jane"}']
    assert json.dumps(autumn_emulator.requests()[0].body) == '{"customer_id": "42", "name": "Jane"}'


def test_the_rate_limiter_spreads_calls_evenly_across_threads():
    """On a clock that stands still, 30 calls from 3 threads get 30 distinct
    slots 1/50 s apart: the schedule, not the machine's speed, is asserted."""
    import threading

    from autumn_django.client import RateLimiter

    slept = []
    limiter = RateLimiter({"customers.update": 50}, clock=lambda: 100.0, sleep=slept.append)
    slots = []

    def call():
        for _ in range(10):
            slots.append(limiter.wait("customers.update"))
        assert limiter.wait("customers.list") == 100.0  # not limited: no wait

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == pytest.approx([100.0 + n / 50 for n in range(30)])
    assert sorted(slept) == pytest.approx([n / 50 for n in range(1, 30)])  # the first goes at once


def test_the_default_pacing_is_the_published_limits_less_ten_percent():
    from autumn_django.conf import rate_limits

    assert rate_limits("2.1")["customers.list"] == pytest.approx(4.5)
    assert rate_limits("2.3")["customers.list"] == pytest.approx(45)
    limits = rate_limits("2.1", {"customers.delete": 3})
    assert limits["customers.update"] == pytest.approx(22.5)
    assert limits["customers.get_or_create"] == pytest.approx(3600)
    assert limits["customers.delete"] == 3


def test_the_client_counts_its_calls_per_route(autumn_client):
    autumn_client.get_or_create_customer("1")
    autumn_client.get_customer("1")
    autumn_client.get_customer("1")
    assert autumn_client.calls == {"customers.get_or_create": 1, "customers.get": 2}
