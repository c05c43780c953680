"""Test against the emulator instead of Autumn, in our suite and in yours.

With the package installed, pytest gets two fixtures (see
:mod:`autumn_django.pytest_plugin`): ``autumn_emulator``, an in-process
emulator that answers every request for Autumn's URL through ``responses``,
and ``autumn_emulator_server``, the same over a real local HTTP server. Outside
pytest, :func:`emulate` does the first as a context manager::

    with emulate() as emulator:
        get_client().get_or_create_customer("42", email="jane@example.com")
        assert emulator.customer("42")["email"] == "jane@example.com"

Under ``responses`` the request never reaches urllib3, so a dropped
connection is raised to the caller unretried; status-code retries (429, 5xx)
still happen, without the sleep. Use the HTTP server to test the transport.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from . import contract
from .emulator import Emulator, EmulatorServer

__all__ = ["emulate", "make_secret_key", "override_autumn_settings", "serve"]


def make_secret_key(env: str = "sandbox") -> str:
    """A random, well-formed secret key, accepted by the emulator only."""
    prefix = "am_sk_test_" if env == "sandbox" else "am_sk_live_"
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(42))


@contextmanager
def override_autumn_settings(**values: Any) -> Iterator[None]:
    """Point ``settings.AUTUMN`` at the emulator, keeping the site's other keys."""
    from django.conf import settings
    from django.test import override_settings

    if not settings.configured:
        yield
        return
    current = getattr(settings, "AUTUMN", None) or {}
    with override_settings(AUTUMN={**current, **values}):
        yield


@contextmanager
def emulate(
    emulator: Emulator | None = None,
    *,
    base_url: str = contract.BASE_URL,
    secret_key: str | None = None,
) -> Iterator[Emulator]:
    """Answer requests for ``base_url`` from ``emulator`` (a new one by
    default) and point ``settings.AUTUMN`` at it with ``secret_key`` (a new
    sandbox key by default). Requests to other hosts pass through."""
    try:
        import responses
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "autumn_django.testing.emulate needs the 'responses' package: pip install 'autumn-django[test]'"
        ) from None
    emulator = emulator or Emulator()
    base_url = base_url.rstrip("/")
    secret_key = secret_key or make_secret_key()

    def answer(request: Any) -> Any:
        path = request.path_url
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        response = emulator.handle(request.method, path, dict(request.headers), body)
        if response.drop:
            raise requests.ConnectionError("Connection aborted: the emulator dropped it")
        return response.status, response.headers, response.body

    own = re.compile(re.escape(base_url) + r"(/.*)?$")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            mock.add_callback(method, own, callback=answer)
        mock.add_passthru(re.compile(r"^(?!" + re.escape(base_url) + r"(/|$))"))
        with override_autumn_settings(SECRET_KEY=secret_key, BASE_URL=base_url):
            yield emulator


@contextmanager
def serve(emulator: Emulator | None = None, *, secret_key: str | None = None) -> Iterator[EmulatorServer]:
    """Run the emulator on a free local port and point ``settings.AUTUMN`` at it."""
    server = EmulatorServer(emulator or Emulator())
    with server, override_autumn_settings(SECRET_KEY=secret_key or make_secret_key(), BASE_URL=server.url):
        yield server
