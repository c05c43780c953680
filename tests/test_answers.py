"""Autumn's answers are checked at the edge: a 404 is "not found" only when
Autumn says so, and an answer that breaks the contract is an
``InvalidResponse`` before anything of it is returned or written."""

from __future__ import annotations

import pytest

from autumn_django import contract
from autumn_django.client import AutumnClient
from autumn_django.exceptions import InvalidResponse, NotFound
from autumn_django.models import Customer
from autumn_django.testing import HostileServer, make_secret_key

pytestmark = pytest.mark.http


@pytest.fixture
def server():
    with HostileServer(lifetime=30) as server:
        yield server


def client_for(server, key=None, **options):
    options.setdefault("timeout", (1, 2))
    options.setdefault("max_retries", 0)
    return AutumnClient(key or make_secret_key(), base_url=server.url, **options)


# --- 404: the customer is gone only when Autumn says so ---------------------------


def test_an_html_404_is_not_not_found(server):
    server.html_404()
    with pytest.raises(InvalidResponse) as caught:
        client_for(server).delete_customer("42")
    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == 404
    assert 'AUTUMN["BASE_URL"]' in caught.value.message
    assert "404 Not Found" in caught.value.message
    assert caught.value.operation == "customers.delete"


def test_a_json_404_without_autumns_not_found_code_is_not_not_found(server):
    server.json({"message": "No route POST /v1/customers.delete.", "code": "not_found"}, status=404)
    with pytest.raises(InvalidResponse):
        client_for(server).delete_customer("42")
    server.json({"error": "nope"}, status=404)
    with pytest.raises(InvalidResponse):
        client_for(server).delete_customer("42")


@pytest.mark.parametrize("code", ["customer_not_found", "product_not_found"])
def test_autumns_own_not_found_is_not_found(server, code):
    server.json({"message": "Customer 42 not found", "code": code, "env": "sandbox"}, status=404)
    with pytest.raises(NotFound) as caught:
        client_for(server).get_customer("42")
    assert caught.value.code == code


@pytest.mark.django_db
def test_a_user_delete_answered_by_an_html_404_keeps_the_mirror_row(autumn_hostile_server, make_user, commit):
    with commit():
        user = make_user()
    assert Customer.objects.of(user).get().state == "synced"
    autumn_hostile_server.html_404()
    with commit():
        user.delete()
    row = Customer.objects.get()
    assert row.state == "deleting"
    assert "BASE_URL" in row.last_error


# --- answers that break the contract --------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"id": "someone-else"}, "id"),
        ({"id": None}, "id"),
        ({"env": "live"}, "env"),
        ({"env": "staging"}, "env"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": -5}, "created_at"),
        ({"created_at": 1e30}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"metadata": "a string"}, "metadata"),
        ({"metadata": [1]}, "metadata"),
        ({"name": 5}, "name"),
        ({"email": {"a": 1}}, "email"),
        ({"fingerprint": True}, "fingerprint"),
        ({"stripe_id": []}, "stripe_id"),
        ({"subscriptions": "none"}, "subscriptions"),
        ({"purchases": [1]}, "purchases"),
    ],
)
def test_a_customer_that_breaks_the_contract_is_an_invalid_response(server, fields, named):
    server.customer(**fields)
    with pytest.raises(InvalidResponse) as caught:
        client_for(server).get_customer("42")
    assert caught.value.operation == "customers.get"
    assert named in caught.value.message
    assert str(caught.value).startswith("customers.get: ")


def test_a_well_formed_customer_passes(server):
    customer = client_for(server).get_customer("42", expand=["invoices"])
    assert customer["id"] == "42" and customer["env"] == "sandbox"


def test_a_customer_without_env_or_created_at_is_invalid(server):
    server.json({"id": "42", "env": "sandbox"})
    with pytest.raises(InvalidResponse, match="created_at"):
        client_for(server).get_customer("42")
    server.json({"id": "42", "created_at": 1})
    with pytest.raises(InvalidResponse, match="env"):
        client_for(server).get_customer("42")


@pytest.mark.parametrize("answer", [[1, 2], "customer", None, 42])
def test_an_answer_that_is_not_an_object_is_invalid(server, answer):
    server.json(answer)
    with pytest.raises(InvalidResponse):
        client_for(server).get_customer("42")


def test_malformed_json_is_an_invalid_response(server):
    server.malformed_json()
    with pytest.raises(InvalidResponse, match="not JSON"):
        client_for(server).get_customer("42")


def test_get_or_create_without_an_id_returns_an_id_less_customer(server):
    client = client_for(server)
    assert client.get_or_create_customer(None, email="jane@example.com")["id"] is None
    server.customer(id="someone")
    with pytest.raises(InvalidResponse, match="id"):
        client.get_or_create_customer(None, email="jane@example.com")


def test_a_rename_answers_with_the_new_id(server):
    client = client_for(server)
    assert client.update_customer("old", new_customer_id="new")["id"] == "new"
    server.customer(id="old")
    with pytest.raises(InvalidResponse, match="id"):
        client.update_customer("old", new_customer_id="new")


def test_autumns_internal_id_may_answer_with_the_customers_own_id(server):
    server.customer(id="42")
    assert client_for(server).get_customer("cus_2abcDEF")["id"] == "42"


def test_the_answer_for_a_live_key_must_be_live(server):
    live = make_secret_key("live")
    assert client_for(server, live).get_customer("42")["env"] == "live"
    server.customer(env="sandbox")
    with pytest.raises(InvalidResponse, match="env"):
        client_for(server, live).get_customer("42")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"list": "nope"}, "list"),
        ({"list": [{"id": "1", "env": "sandbox", "created_at": "x"}]}, "created_at"),
        ({"list": [7]}, "list"),
        ({"has_more": "yes"}, "has_more"),
        ({"total": "3"}, "total"),
        ({"offset": -1}, "offset"),
    ],
)
def test_an_offset_page_that_breaks_the_contract_is_invalid(server, fields, named):
    server.page(**fields)
    with pytest.raises(InvalidResponse) as caught:
        client_for(server).list_customers()
    assert caught.value.operation == "customers.list"
    assert named in caught.value.message


def test_a_cursor_page_with_a_wrong_next_cursor_is_invalid(server):
    client = client_for(server, api_version="2.3")
    assert client.list_customers() == {"list": [], "next_cursor": None}
    server.page(next_cursor=5)
    with pytest.raises(InvalidResponse, match="next_cursor"):
        client.list_customers()


@pytest.mark.parametrize("answer", [{}, {"success": False}, {"success": "true"}])
def test_a_delete_must_answer_success(server, answer):
    server.json(answer)
    with pytest.raises(InvalidResponse, match="success"):
        client_for(server).delete_customer("42")


def test_an_invalid_answer_never_shows_the_key(server):
    key = make_secret_key()
    server.customer(id=key, name=key)
    with pytest.raises(InvalidResponse) as caught:
        client_for(server, key).get_customer("42")
    for text in (str(caught.value), repr(caught.value), repr(caught.value.body)):
        assert key not in text


# --- the validators themselves (pure: the emulator's tests use them too) -----------


def customer(**fields):
    return {"id": "42", "env": "sandbox", "created_at": 1_700_000_000_000, "metadata": {}, **fields}


def test_customer_problem_accepts_a_customer_and_names_what_is_wrong():
    assert contract.customer_problem(customer(), env="sandbox", expected_id="42") is None
    assert contract.customer_problem(customer(metadata=None)) is None
    assert "metadata" in contract.customer_problem(customer(metadata="x"))
    assert "id" in contract.customer_problem(customer(), expected_id="7")
    assert "env" in contract.customer_problem(customer(), env="live")
    assert "created_at" in contract.customer_problem(customer(created_at=float("nan")))


def test_answer_problem_reads_the_expected_id_from_the_request():
    assert (
        contract.answer_problem(contract.GET, customer(), env="sandbox", request={"customer_id": "42"})
        is None
    )
    renamed = {"customer_id": "41", "new_customer_id": "42"}
    assert contract.answer_problem(contract.UPDATE, customer(), request=renamed) is None
    assert (
        contract.answer_problem(contract.GET_OR_CREATE, customer(id=None), request={"customer_id": None})
        is None
    )
    assert contract.answer_problem(contract.DELETE, {"success": True}) is None
    assert contract.answer_problem(contract.LIST, {"list": [customer()], "next_cursor": None}) is None
    assert "list" in contract.answer_problem(contract.LIST, {"next_cursor": None})


def test_only_autumns_not_found_codes_mean_not_found():
    assert contract.is_not_found_code("customer_not_found")
    assert contract.is_not_found_code("product_not_found")
    assert not contract.is_not_found_code("not_found")
    assert not contract.is_not_found_code("http_404")
    assert not contract.is_not_found_code(None)


def test_very_deep_answers_are_refused():
    deep: object = {}
    for _ in range(500):
        deep = {"a": deep}
    assert "nested" in contract.answer_problem(contract.GET, customer(metadata=deep))
