"""The contract, run against the emulator and, with a key, against Autumn.

Every test here runs twice: against the emulator over a real socket, and
against Autumn's sandbox when ``AUTUMN_TEST_LIVE_KEY`` holds a sandbox
secret key (``am_sk_test_...``); without it the live run is skipped, as
django-anymail's integration tests are. A maintainer with a key proves the
emulator faithful in one command::

    AUTUMN_TEST_LIVE_KEY=am_sk_test_... .venv/bin/python -m pytest tests/test_live_contract.py

``AUTUMN_TEST_LIVE_URL`` points the live run elsewhere (a self-hosted
Autumn). The live run makes customers whose ids start with
``autumn-django-test-`` and deletes each one it made.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from autumn_django import contract
from autumn_django.client import AutumnClient
from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.exceptions import AuthenticationError, Conflict, InvalidRequest, NotFound
from autumn_django.testing import make_secret_key

LIVE_KEY = os.environ.get("AUTUMN_TEST_LIVE_KEY", "")
LIVE_URL = os.environ.get("AUTUMN_TEST_LIVE_URL", contract.BASE_URL)


@pytest.fixture(params=["emulator", "live"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(base URL, secret key) of the service under test."""
    if request.param == "live":
        if not LIVE_KEY:
            pytest.skip("live contract run: set AUTUMN_TEST_LIVE_KEY to a sandbox secret key")
        if not LIVE_KEY.startswith("am_sk_test_"):
            pytest.fail("AUTUMN_TEST_LIVE_KEY must be a sandbox key (am_sk_test_...), never a live one")
        yield LIVE_URL, LIVE_KEY
        return
    key = make_secret_key()
    with EmulatorServer(Emulator(secret_keys=[key])) as server:
        yield server.url, key


@pytest.fixture
def api(target: tuple[str, str]) -> Iterator[AutumnClient]:
    base_url, key = target
    with AutumnClient(key, base_url=base_url, max_retries=2, backoff_factor=0.2, timeout=(5, 20)) as client:
        yield client


@pytest.fixture
def new_id(api: AutumnClient) -> Iterator[object]:
    """Makes fresh customer ids and deletes, afterwards, the customers made."""
    made: list[str] = []

    def make() -> str:
        customer_id = f"autumn-django-test-{secrets.token_hex(6)}"
        made.append(customer_id)
        return customer_id

    yield make
    for customer_id in made:
        try:
            api.delete_customer(customer_id)
        except NotFound:
            pass


def test_get_or_create_makes_a_customer_with_every_documented_field(api, new_id):
    customer_id = new_id()
    customer = api.get_or_create_customer(
        customer_id, name="Ada Lovelace", email="ada@example.com", metadata={"plan": "trial"}
    )
    assert customer["id"] == customer_id
    assert (customer["name"], customer["email"]) == ("Ada Lovelace", "ada@example.com")
    assert customer["metadata"] == {"plan": "trial"}
    assert customer["env"] == "sandbox"
    assert isinstance(customer["created_at"], int) and customer["created_at"] > 1_600_000_000_000
    assert {"subscriptions", "purchases", "balances", "flags", "stripe_id", "fingerprint"} <= customer.keys()


def test_get_or_create_of_an_existing_customer_keeps_its_name(api, new_id):
    customer_id = new_id()
    api.get_or_create_customer(customer_id, name="First")
    again = api.get_or_create_customer(customer_id, name="Second")
    assert again["name"] == "First"


def test_update_changes_fields_and_merges_metadata(api, new_id):
    customer_id = new_id()
    api.get_or_create_customer(customer_id, metadata={"a": "1", "b": "2"})
    updated = api.update_customer(customer_id, email="new@example.com", metadata={"b": None, "c": "3"})
    assert updated["email"] == "new@example.com"
    assert updated["metadata"] == {"a": "1", "c": "3"}
    assert api.get_customer(customer_id)["email"] == "new@example.com"


def test_update_with_a_new_id_renames_the_customer(api, new_id):
    old, new = new_id(), new_id()
    api.get_or_create_customer(old)
    renamed = api.update_customer(old, new_customer_id=new)
    assert renamed["id"] == new
    with pytest.raises(NotFound) as caught:
        api.get_customer(old)
    assert caught.value.code == "customer_not_found"


def test_renaming_onto_a_taken_id_is_a_conflict(api, new_id):
    first, second = new_id(), new_id()
    api.get_or_create_customer(first)
    api.get_or_create_customer(second)
    with pytest.raises(Conflict):
        api.update_customer(first, new_customer_id=second)


def test_a_deleted_customer_is_not_found_and_a_second_delete_too(api, new_id):
    customer_id = new_id()
    api.get_or_create_customer(customer_id)
    api.delete_customer(customer_id)
    with pytest.raises(NotFound) as caught:
        api.get_customer(customer_id)
    assert caught.value.code == "customer_not_found"
    with pytest.raises(NotFound):
        api.delete_customer(customer_id)


def test_an_invalid_email_is_refused_with_400(api, new_id):
    with pytest.raises(InvalidRequest) as caught:
        api.get_or_create_customer(new_id(), email="not-an-email")
    assert caught.value.status == 400
    assert "email" in caught.value.message


def test_the_list_finds_a_customer_by_search(api, new_id):
    customer_id = new_id()
    api.get_or_create_customer(customer_id, name="Searchable Person")
    page = api.list_customers(search=customer_id, limit=10)
    assert [customer["id"] for customer in page["list"]] == [customer_id]
    assert page["total_filtered_count"] == 1


def test_an_unknown_secret_key_is_refused_with_401(target):
    base_url, _ = target
    with AutumnClient(make_secret_key(), base_url=base_url, max_retries=0) as stranger:
        with pytest.raises(AuthenticationError) as caught:
            stranger.get_customer("anyone")
    assert caught.value.status == 401
