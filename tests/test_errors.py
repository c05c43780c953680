"""Every error row of the contract, as the client raises it, and the retry
behaviour over a real socket."""

import time

import pytest

from autumn_django.client import AutumnClient
from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.exceptions import (
    AuthenticationError,
    AutumnAPIError,
    AutumnConnectionError,
    AutumnError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from autumn_django.testing import emulate, make_secret_key


def client_for(emulator, key=None, **options):
    from django.conf import settings

    options.setdefault("backoff_factor", 0)
    return AutumnClient(key or settings.AUTUMN["SECRET_KEY"], base_url=settings.AUTUMN["BASE_URL"], **options)


# --- error classes ------------------------------------------------------------


def test_an_unknown_secret_key_is_an_authentication_error():
    allowed = make_secret_key()
    stranger = make_secret_key()
    with emulate(Emulator(secret_keys=[allowed])) as emulator:
        with pytest.raises(AuthenticationError) as caught:
            client_for(emulator, stranger).get_customer("1")
    assert (caught.value.status, caught.value.code, caught.value.env) == (
        401,
        "invalid_secret_key",
        "sandbox",
    )
    assert caught.value.message == (
        "Invalid secret key: well formed, but not one of the keys this emulator was given."
    )
    assert stranger[11:] not in caught.value.message
    assert not caught.value.retryable


def test_a_missing_scope_is_permission_denied():
    key = make_secret_key()
    with emulate(Emulator(secret_keys={key: ["customers:read"]}), secret_key=key) as emulator:
        client = client_for(emulator)
        assert client.list_customers()["list"] == []
        with pytest.raises(Forbidden) as caught:
            client.update_customer("1", name="x")
    assert (caught.value.status, caught.value.code) == (403, "insufficient_scopes")
    assert caught.value.message == "Insufficient scopes. Missing: customers:write"


def test_body_validation_is_invalid_inputs_naming_the_field(autumn_emulator):
    with pytest.raises(InvalidRequest) as caught:
        client_for(autumn_emulator).list_customers(subscription_status="paused")
    assert (caught.value.status, caught.value.code) == (400, "invalid_inputs")
    assert caught.value.message.startswith("subscription_status: ")


def test_not_found_and_conflict_carry_autumns_code_and_environment(autumn_emulator):
    client = client_for(autumn_emulator)
    with pytest.raises(NotFound) as missing:
        client.delete_customer("ghost")
    client.get_or_create_customer("a")
    client.get_or_create_customer("b")
    with pytest.raises(Conflict) as taken:
        client.update_customer("a", new_customer_id="b")
    assert (missing.value.code, missing.value.env) == ("customer_not_found", "sandbox")
    assert taken.value.code == "customer_already_exists"


def test_a_503_after_retries_is_service_unavailable_with_retry_after(autumn_emulator):
    autumn_emulator.fail_next(3, status=503)
    with pytest.raises(ServiceUnavailable) as caught:
        client_for(autumn_emulator, max_retries=2).get_customer("1")
    assert (caught.value.code, caught.value.retry_after) == ("service_unavailable", 1.0)
    assert caught.value.retryable
    assert autumn_emulator.counts["customers.get"] == 3


def test_a_500_is_a_retryable_server_error(autumn_emulator):
    autumn_emulator.fail_next(1, status=500)
    with pytest.raises(ServerError) as caught:
        client_for(autumn_emulator, max_retries=0).get_customer("1")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        500,
        "internal_error",
        "Internal server error",
    )


def test_an_html_502_page_reads_as_its_title(autumn_emulator):
    autumn_emulator.fail_next(1, status=502)
    with pytest.raises(ServerError) as caught:
        client_for(autumn_emulator, max_retries=0).get_customer("1")
    assert caught.value.status == 502
    assert caught.value.message == "502 Bad Gateway"
    assert "<html>" not in str(caught.value)


def test_a_plain_text_429_is_rate_limited_with_its_message(autumn_emulator):
    autumn_emulator.fail_next(1, status=429)
    with pytest.raises(RateLimited) as caught:
        client_for(autumn_emulator, max_retries=0).get_customer("1")
    assert caught.value.message == "Too many requests, please try again later."
    assert caught.value.retry_after == 1.0


def test_the_org_cap_429_is_json_without_retry_after():
    clock = [1_000.0]
    with emulate(Emulator(rate_limits=True, clock=lambda: clock[0])) as emulator:
        emulator.use_up_rate_limit("org_cap")  # the cap is used up
        with pytest.raises(RateLimited) as caught:
            client_for(emulator, max_retries=0).get_or_create_customer("1")
    assert (caught.value.code, caught.value.message, caught.value.retry_after) == (
        "rate_limit_exceeded",
        "Rate limit exceeded.",
        None,
    )


def test_a_truncated_json_404_is_not_taken_for_customer_not_found():
    """Only Autumn's own code says a customer is gone; a body cut short
    cannot, so it is an error to look into, not a deletion to record."""
    import responses

    from autumn_django.exceptions import InvalidResponse

    with responses.RequestsMock() as mock:
        mock.post("https://api.useautumn.com/v1/customers.get", status=404, body='{"message": "Cust')
        with pytest.raises(InvalidResponse) as caught:
            AutumnClient(make_secret_key(), max_retries=0).get_customer("1")
    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == 404
    assert '{"message": "Cust' in str(caught.value)


def test_api_errors_pickle_with_their_fields(autumn_emulator):
    import pickle

    with pytest.raises(NotFound) as caught:
        client_for(autumn_emulator).get_customer("1")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), copy.status, copy.code, str(copy)) == (
        NotFound,
        404,
        "customer_not_found",
        str(caught.value),
    )


# --- retries over HTTP --------------------------------------------------------


@pytest.mark.http
def test_a_429_is_retried_after_the_retry_after_delay(http_emulator, http_client):
    http_client.get_or_create_customer("1")
    http_emulator.emulator.fail_next(1, "customers.get", status=429)
    started = time.monotonic()
    assert http_client.get_customer("1")["id"] == "1"
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured
    assert [e.status for e in http_emulator.emulator.requests("customers.get")] == [429, 200]


@pytest.mark.http
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(http_emulator, http_client, status):
    http_emulator.emulator.fail_next(2, status=status, headers={"Retry-After": "0"})
    assert http_client.get_or_create_customer("1")["id"] == "1"
    assert [e.status for e in http_emulator.emulator.requests()] == [status, status, 200]


@pytest.mark.http
def test_a_dropped_connection_is_retried(http_emulator, http_client):
    http_emulator.emulator.fail_next(1, drop=True)
    assert http_client.get_or_create_customer("1")["id"] == "1"
    assert http_emulator.emulator.counts["customers.get_or_create"] == 2


@pytest.mark.http
def test_retries_stop_at_max_retries(http_emulator, http_client):
    http_emulator.emulator.fail_next(10, status=503, headers={"Retry-After": "0"})
    with pytest.raises(ServiceUnavailable):
        http_client.get_customer("1")
    assert http_emulator.emulator.counts["customers.get"] == 3  # 1 + MAX_RETRIES of 2


@pytest.mark.http
def test_connections_dropped_every_time_end_in_a_connection_error(http_emulator, http_client):
    http_emulator.emulator.fail_next(10, drop=True)
    with pytest.raises(AutumnConnectionError, match="customers.get: no answer from http://127.0.0.1"):
        http_client.get_customer("1")
    assert http_emulator.emulator.counts["customers.get"] == 3


@pytest.mark.http
def test_client_errors_are_not_retried(http_emulator, http_client):
    with pytest.raises(NotFound):
        http_client.get_customer("nobody")
    assert http_emulator.emulator.counts["customers.get"] == 1


@pytest.mark.http
def test_no_request_ever_carries_an_idempotency_key(http_emulator, http_client):
    http_emulator.emulator.fail_next(2, status=503, headers={"Retry-After": "0"})
    http_client.get_or_create_customer("1")
    http_client.update_customer("1", name="x")
    http_client.delete_customer("1")
    logged = http_emulator.emulator.requests()
    assert len(logged) == 5
    assert all("idempotency-key" not in entry.headers for entry in logged)


@pytest.mark.http
def test_a_slow_autumn_is_a_timeout_not_a_hang():
    with EmulatorServer(Emulator(latency_ms=1500)) as server:
        client = AutumnClient(make_secret_key(), base_url=server.url, timeout=(1, 0.3), max_retries=0)
        started = time.monotonic()
        with pytest.raises(AutumnConnectionError, match="timed out"):
            client.get_customer("1")
        assert time.monotonic() - started < 1.2


@pytest.mark.http
def test_nobody_listening_is_a_connection_error():
    with EmulatorServer(Emulator()) as server:
        url = server.url
    client = AutumnClient(make_secret_key(), base_url=url, max_retries=1, backoff_factor=0)
    with pytest.raises(AutumnConnectionError) as caught:
        client.get_customer("1")
    assert caught.value.retryable
    # An AutumnError the sync engine records as a failure, but no API error: nobody answered.
    assert isinstance(caught.value, AutumnError) and not isinstance(caught.value, AutumnAPIError)
    assert str(caught.value).startswith(f"customers.get: no answer from {url} (")
