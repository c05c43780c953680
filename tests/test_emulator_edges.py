"""The emulator answers hostile requests as Autumn would: with a 400, not a
dropped connection and a traceback."""

from __future__ import annotations

import pytest
import requests

from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.testing import make_secret_key


@pytest.fixture
def server():
    with EmulatorServer(Emulator()) as running:
        yield running


def post(server, route, body: bytes):
    return requests.post(
        f"{server.url}/v1/{route}",
        data=body,
        headers={"Authorization": f"Bearer {make_secret_key()}", "Content-Type": "application/json"},
        timeout=5,
    )


def test_a_deeply_nested_body_is_a_400_not_a_dropped_connection(server):
    body = b'{"customer_id": "1", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post(server, "customers.get_or_create", body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_inputs"


def test_the_server_keeps_serving_after_a_hostile_body(server):
    post(server, "customers.get_or_create", b"[" * 100_000)
    response = post(server, "customers.get_or_create", b'{"customer_id": "after"}')
    assert response.status_code == 200
    assert server.emulator.customer("after") is not None


def test_a_bug_in_a_route_is_a_500_and_the_server_keeps_serving(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.emulator, "handle", broken)
    response = post(server, "customers.get", b'{"customer_id": "1"}')
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    monkeypatch.undo()
    assert post(server, "customers.get_or_create", b'{"customer_id": "1"}').status_code == 200


def test_a_body_over_the_limit_is_refused_without_reading_it(server):
    import http.client

    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.putrequest("POST", "/v1/customers.get")
    connection.putheader("Content-Length", str(10**12))  # and then no such body
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
