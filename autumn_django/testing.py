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

A third fixture, ``autumn_hostile_server`` (:func:`hostile_server` outside
pytest), is a :class:`HostileServer`: a local server that answers as the test
picks, slowly (a drip feed), hugely, malformed or wrongly typed, to test
that a slow or broken Autumn cannot hang or corrupt a site.

Webhooks: the emulator sends the events of its billing changes (and any
``send_event``) signed as Svix signs them. :func:`django_transport` hands
them to the site in-process, through Django's test client, in the test's
thread (so in its database transaction)::

    secret = make_webhook_secret()
    autumn_emulator.add_webhook("/autumn/webhooks/", secret, transport=django_transport())
    autumn_emulator.attach("42", "pro")  # the view has run when this returns
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

from . import contract
from .emulator import Emulator, EmulatorServer
from .emulator.webhooks import Transport, make_webhook_secret

__all__ = [
    "HostileRequest",
    "HostileServer",
    "django_transport",
    "emulate",
    "hostile_server",
    "make_secret_key",
    "make_webhook_secret",
    "override_autumn_settings",
    "serve",
]


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


def django_transport(client: Any = None) -> Transport:
    """A webhook transport for :meth:`Emulator.add_webhook
    <autumn_django.emulator.Emulator.add_webhook>` that POSTs each attempt
    through Django's test client (``client``, or a new ``Client()``) to the
    endpoint URL's path, with the ``svix-*`` headers, and returns the status.
    An exception raised by the view is recorded as the attempt's error (and
    retried, as a 500 would be)."""
    from django.test import Client

    client = client or Client()

    def send(url: str, headers: Any, body: bytes) -> int:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {name: value for name, value in headers.items() if name.lower() != "content-type"}
        response = client.post(path, data=body, content_type="application/json", headers=sent)
        return int(response.status_code)

    return send


@contextmanager
def emulate(
    emulator: Emulator | None = None,
    *,
    base_url: str = contract.BASE_URL,
    secret_key: str | None = None,
    webhook_path: str | None = None,
    webhook_secret: str | None = None,
) -> Iterator[Emulator]:
    """Answer requests for ``base_url`` from ``emulator`` (a new one by
    default, closed at the end) and point ``settings.AUTUMN`` at it with
    ``secret_key`` (a new sandbox key by default). Requests to other hosts
    pass through. With ``webhook_path``, the emulator's events are delivered
    to the site at that path in-process (:func:`django_transport`), signed
    with ``webhook_secret`` (a new one by default: see
    ``emulator.webhooks.endpoints``)."""
    try:
        import responses
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "autumn_django.testing.emulate needs the 'responses' package: pip install 'autumn-django[test]'"
        ) from None
    owned = emulator is None
    emulator = emulator or Emulator()
    base_url = base_url.rstrip("/")
    secret_key = secret_key or make_secret_key()
    if webhook_path is not None:
        emulator.add_webhook(
            webhook_path, webhook_secret or make_webhook_secret(), transport=django_transport()
        )

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
        try:
            with override_autumn_settings(SECRET_KEY=secret_key, BASE_URL=base_url):
                yield emulator
        finally:
            if owned:
                emulator.close()  # stops its webhook sender: no retry outlives the test


@contextmanager
def serve(emulator: Emulator | None = None, *, secret_key: str | None = None) -> Iterator[EmulatorServer]:
    """Run the emulator on a free local port and point ``settings.AUTUMN`` at it."""
    server = EmulatorServer(emulator or Emulator())
    with server, override_autumn_settings(SECRET_KEY=secret_key or make_secret_key(), BASE_URL=server.url):
        yield server


# --- A hostile server --------------------------------------------------------


@dataclass(frozen=True)
class HostileRequest:
    """One request as the hostile server saw it (the Authorization header is
    not kept: ``authorized`` only says whether one came)."""

    method: str
    path: str
    route: str | None
    body: Any  # the decoded JSON body, or None
    api_version: str | None
    authorized: bool
    env: str  # of the key sent (by its prefix; sandbox when none), never the key
    at: float  # time.monotonic() when it arrived


#: What the server does with one request: writes an answer (or none) on the handler.
Behaviour = Callable[["_HostileHandler", HostileRequest], None]


class HostileServer:
    """A real HTTP server on a free loopback port that answers the way a test
    picks: slowly, hugely, wrongly. For testing a client's defences (ours, or
    a site's views that call Autumn) against what a broken proxy, a wrong
    ``BASE_URL`` or a hostile host can send.

    Until told otherwise it answers every route as Autumn would, minimally
    (:meth:`customer`, :meth:`page`). Each behaviour method replaces that
    standing answer, or with ``times=N`` answers only the next N requests so
    and then falls back to it (``rate_limited(1, times=1)`` then a success).

    Threads serve it (one per connection); :meth:`stop`, leaving the ``with``
    block, or ``lifetime`` seconds after :meth:`start` end it, including
    answers still dripping. ``requests`` lists what arrived and
    ``bytes_sent`` counts the body bytes written, to tell how much a client
    read before it gave up.
    """

    def __init__(self, *, lifetime: float = 60.0) -> None:
        self._http = _HostileHTTPServer(self)
        self.lifetime = lifetime
        self.requests: list[HostileRequest] = []
        self.bytes_sent = 0
        self.secret_key: str | None = None  # set by hostile_server()
        self._standing: Behaviour = self._autumn()
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> HostileServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="autumn-hostile", daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every answer in progress; safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if self._thread is not None:
            self._http.shutdown()
        self._http.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what it answers ------------------------------------------------------

    def _set(self, behaviour: Behaviour, times: int | None) -> None:
        with self._lock:
            if times is None:
                self._standing = behaviour
            else:
                self._script.extend([behaviour] * times)

    def customer(self, *, times: int | None = None, **fields: Any) -> None:
        """Answer as Autumn would (the customer asked for, in the key's
        environment; a list page; ``{"success": true}``), with ``fields``
        replacing the customer's: ``customer(id="someone-else")``,
        ``customer(metadata="a string")``, ``customer(created_at="yesterday")``."""
        self._set(self._autumn(customer=fields), times)

    def page(self, *, times: int | None = None, **fields: Any) -> None:
        """Answer ``customers.list`` with a page whose fields ``fields``
        replace: ``page(list="nope")``, ``page(has_more="yes")``."""
        self._set(self._autumn(page=fields), times)

    def json(
        self,
        payload: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer every route with this JSON."""
        body = json.dumps(payload).encode()
        self.answer(status, body, {"Content-Type": "application/json", **(headers or {})}, times=times)

    def answer(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, *, times: int | None = None
    ) -> None:
        """Answer every route with these exact bytes."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            handler.reply(status, body, headers)

        self._set(behaviour, times)

    def malformed_json(self, *, times: int | None = None) -> None:
        """A 200 whose JSON stops half way."""
        self.answer(200, b'{"id": "42", "name": "Ja', {"Content-Type": "application/json"}, times=times)

    def deep_nesting(self, depth: int = 100_000, *, times: int | None = None) -> None:
        """A 200 of ``depth`` nested arrays: more than a recursive decoder takes."""
        self.answer(200, b"[" * depth + b"]" * depth, {"Content-Type": "application/json"}, times=times)

    def html_404(self, *, times: int | None = None) -> None:
        """A web server's HTML "Not Found" page: what a wrong ``BASE_URL`` or a
        proxy in front of the wrong host answers."""
        page = (
            b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
            b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
        self.answer(404, page, {"Content-Type": "text/html"}, times=times)

    def rate_limited(self, retry_after: float = 30, *, times: int | None = None) -> None:
        """Autumn's plain-text 429 with ``Retry-After``."""
        headers = {"Content-Type": "text/plain", "Retry-After": f"{retry_after:g}"}
        self.answer(429, b"Too many requests, please try again later.", headers, times=times)

    def redirect_loop(self, status: int = 307, *, times: int | None = None) -> None:
        """Redirect every request to itself."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            handler.reply(status, b"", {"Location": self.url + request.path})

        self._set(behaviour, times)

    def huge_body(
        self,
        size: int = 64 * 1024 * 1024,
        *,
        status: int = 200,
        declare_length: bool = True,
        content_type: str = "application/json",
        times: int | None = None,
    ) -> None:
        """A body of ``size`` bytes, written as fast as the client reads it
        (a JSON string of ``x``; for an error ``status``, the same). Without
        ``declare_length`` no Content-Length is sent and the connection closes
        at the end, so only reading tells the size."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            headers = {"Content-Type": content_type}
            if declare_length:
                headers["Content-Length"] = str(size)
            else:
                headers["Connection"] = "close"
                handler.close_connection = True
            handler.head(status, headers)
            head, tail = b'{"pad":"', b'"}'
            handler.send_bytes(head)
            left = size - len(head) - len(tail)
            chunk = b"x" * 65536
            while left > 0 and not self._stopping.is_set():
                piece = chunk[: min(left, len(chunk))]
                if not handler.send_bytes(piece):
                    return
                left -= len(piece)
            handler.send_bytes(tail)

        self._set(behaviour, times)

    def drip(
        self,
        body: bytes | None = None,
        *,
        interval: float = 0.5,
        status: int = 200,
        endless: bool = False,
        headers_too: bool = False,
        times: int | None = None,
    ) -> None:
        """Send the headers at once, then the body one byte every ``interval``
        seconds: ``body`` (by default the answer Autumn would give), or with
        ``endless`` a body that never ends. ``headers_too`` drips the status
        line and headers as well."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            content = body if body is not None else self._autumn_body(request, {}, {})[1]
            # An endless body announces no length: it ends when the connection does.
            length = "Connection: close" if endless else f"Content-Length: {len(content)}"
            head = (
                f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
            ).encode()
            handler.close_connection = True
            if not headers_too:
                handler.send_bytes(head, count=False)
                head = b""
            stream = itertools.chain(head, content, itertools.repeat(ord(" ")) if endless else ())
            for byte in stream:
                if not handler.send_bytes(bytes((byte,)), count=True) or self._stopping.wait(interval):
                    return

        self._set(behaviour, times)

    def silent(self, seconds: float, *, times: int | None = None) -> None:
        """Say nothing for ``seconds`` after the request, then answer as Autumn."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            if not self._stopping.wait(seconds):
                self._autumn()(handler, request)

        self._set(behaviour, times)

    def drop(self, *, times: int | None = None) -> None:
        """Close the connection without a byte of answer."""

        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        self._set(behaviour, times)

    def well_behaved(self) -> None:
        """Back to answering as Autumn would, and forget any ``times=`` script."""
        with self._lock:
            self._standing = self._autumn()
            self._script.clear()

    # --- Autumn's answers, minimally ------------------------------------------

    def _autumn(
        self, customer: dict[str, Any] | None = None, page: dict[str, Any] | None = None
    ) -> Behaviour:
        def behaviour(handler: _HostileHandler, request: HostileRequest) -> None:
            status, body = self._autumn_body(request, customer or {}, page or {})
            handler.reply(status, body, {"Content-Type": "application/json"})

        return behaviour

    def _autumn_body(
        self, request: HostileRequest, customer: dict[str, Any], page: dict[str, Any]
    ) -> tuple[int, bytes]:
        body = request.body if isinstance(request.body, dict) else {}
        answer: Any
        if request.route in (contract.GET_OR_CREATE, contract.GET, contract.UPDATE):
            answer = {**_customer_for(body, request), **customer}
        elif request.route == contract.LIST:
            version = contract.parse_api_version(request.api_version or contract.DEFAULT_API_VERSION)
            if version is not None and contract.uses_cursor_pagination(version):
                answer = {"list": [], "next_cursor": None, **page}
            else:
                limit = body.get("limit", contract.OFFSET_DEFAULT_LIMIT)
                answer = {
                    "list": [],
                    "total": 0,
                    "total_count": 0,
                    "total_filtered_count": 0,
                    "limit": limit,
                    "offset": body.get("offset", 0),
                    "has_more": False,
                    **page,
                }
        elif request.route == contract.DELETE:
            answer = {"success": True}
        else:
            message = f"No route {request.method} {request.path}."
            return 404, json.dumps({"message": message, "code": "not_found", "env": "sandbox"}).encode()
        return 200, json.dumps(answer).encode()


def _customer_for(body: dict[str, Any], request: HostileRequest) -> dict[str, Any]:
    asked = body.get("new_customer_id", body.get("customer_id"))
    return {
        "id": asked,
        "name": body.get("name"),
        "email": body.get("email"),
        "created_at": int(time.time() * 1000),
        "fingerprint": body.get("fingerprint"),
        "stripe_id": body.get("stripe_id"),
        "env": request.env,
        "metadata": body.get("metadata") or {},
        "send_email_receipts": bool(body.get("send_email_receipts", False)),
        "billing_controls": {},
        "subscriptions": [],
        "purchases": [],
        "licenses": [],
        "balances": {},
        "flags": {},
        "config": {},
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "autumn-hostile"
    server: _HostileHTTPServer
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        owner = self.server.owner
        length = min(int(self.headers.get("Content-Length") or 0), 1024 * 1024)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?")[0]
        route = path.removeprefix("/v1/") if path.startswith("/v1/") else None
        authorization = self.headers.get("Authorization") or ""
        request = HostileRequest(
            method=self.command,
            path=self.path,
            route=route if route in contract.ROUTES else None,
            body=body,
            api_version=self.headers.get("x-api-version"),
            authorized=bool(authorization),
            env=contract.key_env(authorization.removeprefix("Bearer ").strip()) or "sandbox",
            at=time.monotonic(),
        )
        with owner._lock:
            owner.requests.append(request)
            behaviour = owner._script.popleft() if owner._script else owner._standing
        try:
            behaviour(self, request)
        except OSError:  # the client hung up: normal for a hostile answer
            self.close_connection = True

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.head(status, {**(headers or {}), "Content-Length": str(len(body))})
        self.send_bytes(body)

    def send_bytes(self, data: bytes, *, count: bool = True) -> bool:
        """Write and flush ``data``; False once the client is gone."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        if count:
            with self.server.owner._lock:
                self.server.owner.bytes_sent += len(data)
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HostileHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: HostileServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _HostileHandler)  # loopback only

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up mid-answer is what these tests are about


@contextmanager
def hostile_server(
    *, secret_key: str | None = None, lifetime: float = 60.0, **settings: Any
) -> Iterator[HostileServer]:
    """A :class:`HostileServer`, with ``settings.AUTUMN`` pointed at it and
    short limits so a test of a failure is quick: ``TIMEOUT`` and
    ``ADMIN_TIMEOUT`` of ``(1, 1)`` and ``MAX_RETRIES`` of 0, so a client
    gives up within 2 s. ``settings`` replace any ``AUTUMN`` key."""
    server = HostileServer(lifetime=lifetime)
    server.secret_key = secret_key or make_secret_key()
    values = {
        "SECRET_KEY": server.secret_key,
        "BASE_URL": server.url,
        "TIMEOUT": (1.0, 1.0),
        "ADMIN_TIMEOUT": (1.0, 1.0),
        "MAX_RETRIES": 0,
        **settings,
    }
    with server, override_autumn_settings(**values):
        yield server
