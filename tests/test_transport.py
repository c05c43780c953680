"""The transport against a hostile server: deadlines, bounded reads, errors
that name their cause and never carry the key.

Timings are asserted with generous margins ("within 3 s of a 1 s
deadline"), never tightly, so a slow machine does not fail them."""

from __future__ import annotations

import json
import pickle
import socket
import time
from types import SimpleNamespace

import pytest
import requests

from autumn_django import client as client_module
from autumn_django.admin.helpers import admin_client
from autumn_django.client import AutumnClient, get_client
from autumn_django.exceptions import (
    AutumnAPIError,
    AutumnConnectionError,
    AutumnError,
    AutumnRequestError,
    InvalidResponse,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from autumn_django.testing import HostileServer, make_secret_key

pytestmark = pytest.mark.http


@pytest.fixture
def server():
    with HostileServer(lifetime=30) as server:
        yield server


def client_for(server, **options):
    options.setdefault("timeout", (1, 1))
    options.setdefault("max_retries", 0)
    options.setdefault("backoff_factor", 0)
    return AutumnClient(options.pop("key", None) or make_secret_key(), base_url=server.url, **options)


class Stopwatch:
    def __enter__(self):
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc_info):
        self.seconds = time.monotonic() - self.started


def leaks(error, key):
    """Whether ``error`` shows ``key`` anywhere a log or a task backend would."""
    texts = [str(error), repr(error), repr(getattr(error, "body", None)), repr(error.args)]
    copy = pickle.loads(pickle.dumps(error))
    texts += [str(copy), repr(copy), repr(getattr(copy, "body", None)), repr(copy.args)]
    return any(key in text for text in texts)


# --- the deadline ---------------------------------------------------------------


def test_an_endless_drip_feed_is_cut_at_the_deadline(server):
    server.drip(endless=True, interval=0.05)
    client = client_for(server, deadline=1.0)
    with Stopwatch() as watch, pytest.raises(AutumnConnectionError, match="deadline") as caught:
        client.get_customer("42")
    assert watch.seconds < 4  # a 1 s deadline, with a wide margin
    assert "customers.get" in str(caught.value)


def test_a_drip_fed_header_is_cut_at_the_deadline_too(server):
    server.drip(endless=True, interval=0.05, headers_too=True)
    client = client_for(server, deadline=1.0)
    with Stopwatch() as watch, pytest.raises(AutumnConnectionError, match="deadline"):
        client.get_customer("42")
    assert watch.seconds < 4


def test_a_drip_that_ends_within_the_deadline_is_read_whole(server):
    server.drip(b'{"success":true}', interval=0.02)
    assert client_for(server, deadline=10).delete_customer("42") == {"success": True}


def test_the_admin_client_gives_up_on_a_drip_within_admin_timeout(server, settings):
    """Each byte comes well within the read timeout, so only a deadline for the
    whole operation stops it: ADMIN_TIMEOUT (0.5, 0.5) allows 1 s in all."""
    settings.AUTUMN = {"SECRET_KEY": make_secret_key(), "BASE_URL": server.url, "ADMIN_TIMEOUT": (0.5, 0.5)}
    server.drip(b" " * 200 + b'{"success":true}', interval=0.05)  # 10 s of answer
    with Stopwatch() as watch, pytest.raises(AutumnConnectionError):
        admin_client().delete_customer("42")
    assert watch.seconds < 4


def test_a_long_retry_after_is_not_waited_past_the_deadline(server):
    server.rate_limited(retry_after=30)
    client = client_for(server, max_retries=3, deadline=2)
    with Stopwatch() as watch, pytest.raises(RateLimited) as caught:
        client.list_customers()
    assert watch.seconds < 5
    assert caught.value.retry_after == 30
    assert len(server.requests) == 1


def test_the_admin_list_page_does_not_wait_out_a_retry_after(server, settings):
    settings.AUTUMN = {"SECRET_KEY": make_secret_key(), "BASE_URL": server.url, "ADMIN_TIMEOUT": (1, 1)}
    server.rate_limited(retry_after=30)
    with Stopwatch() as watch, pytest.raises(RateLimited):
        admin_client().list_customers(limit=25)
    assert watch.seconds < 5


def test_a_backoff_that_would_end_past_the_deadline_is_not_started(server):
    """urllib3 retries the first failure at once and backs off from the second:
    here 2 x 10 s, which does not fit a 2 s deadline."""
    server.answer(503, b"down", {"Content-Type": "text/plain"})
    client = client_for(server, max_retries=3, backoff_factor=10, deadline=2)
    with Stopwatch() as watch, pytest.raises(ServiceUnavailable):
        client.get_customer("42")
    assert watch.seconds < 5
    assert len(server.requests) == 2


def test_retries_that_fit_the_deadline_still_happen(server):
    server.rate_limited(retry_after=1, times=1)
    client = client_for(server, max_retries=2, deadline=10)
    with Stopwatch() as watch:
        assert client.get_customer("42")["id"] == "42"
    assert watch.seconds >= 0.9  # Retry-After: 1 was honoured
    assert len(server.requests) == 2


def test_the_default_deadline_lets_every_attempt_use_its_timeouts():
    key = make_secret_key()
    assert AutumnClient(key, timeout=(3, 15), max_retries=3).deadline == pytest.approx(72)
    assert AutumnClient(key, timeout=(2, 5), max_retries=0).deadline == pytest.approx(7)
    assert AutumnClient(key, deadline=1.5).deadline == 1.5
    with pytest.raises(ValueError):
        AutumnClient(key, deadline=0)


def test_the_admin_client_has_admin_timeout_as_its_deadline(settings):
    settings.AUTUMN = {"SECRET_KEY": make_secret_key(), "ADMIN_TIMEOUT": (2, 5)}
    client = admin_client()
    assert (client.deadline, client.max_retries, client.timeout) == (7, 1, (2, 5))
    assert admin_client() is client  # cached: the overrides are hashable
    assert get_client() is not client


# --- bounded reads --------------------------------------------------------------


def test_a_huge_answer_of_unknown_length_is_cut_off_not_read_whole(server):
    server.huge_body(64 * 1024 * 1024, declare_length=False)
    with pytest.raises(InvalidResponse, match="larger than"):
        client_for(server, deadline=10).get_customer("42")
    assert server.bytes_sent < 40 * 1024 * 1024  # the client stopped reading


def test_a_huge_declared_length_is_refused_before_reading(server):
    server.huge_body(64 * 1024 * 1024)
    with pytest.raises(InvalidResponse, match="larger than"):
        client_for(server, deadline=10).get_customer("42")
    assert server.bytes_sent < 40 * 1024 * 1024


def test_a_huge_error_body_is_read_only_for_its_beginning(server):
    server.huge_body(64 * 1024 * 1024, status=502, declare_length=False, content_type="text/plain")
    with Stopwatch() as watch, pytest.raises(ServerError) as caught:
        client_for(server, deadline=10).get_customer("42")
    assert caught.value.status == 502
    assert len(str(caught.value)) < 1000
    assert server.bytes_sent < 40 * 1024 * 1024
    assert watch.seconds < 5


def test_summarising_unclosed_title_tags_takes_linear_time(server):
    """140 KB of ``<title>`` without a closing tag cost 20 s of CPU before."""
    server.answer(502, b"<title>" * 20_000, {"Content-Type": "text/html"})
    with Stopwatch() as watch, pytest.raises(ServerError):
        client_for(server, deadline=10).get_customer("42")
    assert watch.seconds < 3


def test_the_summary_of_a_long_html_page_is_quick_and_readable():
    page = "<html><title>502 Bad <b>Gateway</b></title>" + "<p" * 100_000 + "</html>"
    started = time.monotonic()
    assert client_module._summarize(page) == "502 Bad Gateway"
    assert client_module._summarize("<" * 200_000)[:5] == "<<<<<"
    assert time.monotonic() - started < 2


# --- errors name their cause ----------------------------------------------------


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_named_so():
    client = AutumnClient(make_secret_key(), base_url=f"http://127.0.0.1:{closed_port()}", max_retries=0)
    with pytest.raises(AutumnConnectionError, match="connection refused") as caught:
        client.get_customer("1")
    assert "timed out" not in str(caught.value)


def test_a_dns_failure_is_named_so(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    client = AutumnClient(make_secret_key(), base_url="http://autumn.invalid", max_retries=0)
    with pytest.raises(AutumnConnectionError, match="DNS") as caught:
        client.get_customer("1")
    assert "timed out" not in str(caught.value)


def test_a_connect_timeout_is_named_so(monkeypatch):
    import urllib3.util.connection

    def hang(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", hang)
    client = AutumnClient(make_secret_key(), base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(AutumnConnectionError, match="timed out connecting"):
        client.get_customer("1")


def test_a_read_timeout_is_named_so(server):
    server.silent(5)
    with pytest.raises(AutumnConnectionError, match="timed out reading"):
        client_for(server, timeout=(1, 0.3)).get_customer("1")


def test_a_dropped_connection_is_named_so(server):
    server.drop()
    with pytest.raises(AutumnConnectionError, match="connection dropped"):
        client_for(server).get_customer("1")


def test_a_redirect_loop_is_not_followed(server):
    server.redirect_loop()
    with pytest.raises(AutumnAPIError, match="BASE_URL"):
        client_for(server, max_retries=3).get_customer("1")
    assert len(server.requests) == 1


# --- every failure is an AutumnError without the key ----------------------------


def test_a_header_value_error_is_a_request_error_without_the_key(server):
    key = make_secret_key()
    client = client_for(server, key=key)
    client._auth.key = key + "\n"  # http.client refuses it with the value in the message
    with pytest.raises(AutumnRequestError) as caught:
        client.get_customer("1")
    assert not leaks(caught.value, key)
    assert "customers.get" in str(caught.value)


def test_an_invalid_url_is_a_request_error():
    key = make_secret_key()
    client = AutumnClient(key, base_url="http://127.0.0.1:99999", max_retries=0)
    with pytest.raises(AutumnRequestError, match="BASE_URL") as caught:
        client.get_customer("1")
    assert not isinstance(caught.value, AutumnConnectionError)
    assert not leaks(caught.value, key)


def test_deeply_nested_json_is_an_invalid_response(server):
    key = make_secret_key()
    server.deep_nesting()
    with pytest.raises(InvalidResponse) as caught:
        client_for(server, key=key).get_customer("1")
    assert caught.value.operation == "customers.get"
    assert not leaks(caught.value, key)


def test_any_exception_while_sending_becomes_a_request_error(server, monkeypatch):
    key = make_secret_key()
    client = client_for(server, key=key)

    def explode(*args, **kwargs):
        raise RuntimeError(f"something broke near {key}")

    monkeypatch.setattr(client.session, "post", explode)
    with pytest.raises(AutumnRequestError) as caught:
        client.get_customer("1")
    assert not leaks(caught.value, key)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_any_exception_while_decoding_becomes_an_invalid_response(server, monkeypatch):
    key = make_secret_key()
    client = client_for(server, key=key)

    def overflow(*args, **kwargs):
        raise OverflowError(f"number too large for {key}")

    monkeypatch.setattr(client_module, "json", SimpleNamespace(loads=overflow, dumps=json.dumps))
    with pytest.raises(InvalidResponse) as caught:
        client.get_customer("1")
    assert not leaks(caught.value, key)


def test_an_error_echoing_the_key_in_a_non_json_body_is_redacted(server):
    key = make_secret_key()
    server.answer(502, f"<title>proxy saw {key}</title>".encode(), {"Content-Type": "text/html"})
    with pytest.raises(ServerError) as caught:
        client_for(server, key=key).get_customer("1")
    assert not leaks(caught.value, key)


def test_connection_errors_pickle_without_the_key(server):
    key = make_secret_key()
    server.drip(endless=True, interval=0.05)
    with pytest.raises(AutumnError) as caught:
        client_for(server, key=key, deadline=0.5).get_customer("1")
    assert not leaks(caught.value, key)
    assert pickle.loads(pickle.dumps(caught.value)).retryable


def test_the_hostile_server_listens_on_loopback_only_and_stops_by_itself():
    server = HostileServer(lifetime=0.5).start()
    assert server.url.startswith("http://127.0.0.1:")
    time.sleep(1.5)
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/v1/customers.get", json={}, timeout=1)


def test_a_body_that_will_not_decompress_is_an_invalid_response(server):
    server.answer(200, b"not gzip at all", {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    with pytest.raises(InvalidResponse, match="could not be read"):
        client_for(server).get_customer("1")
