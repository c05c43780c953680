"""An HTTP client for Autumn's customers API.

One method per operation, named for it, on the snake_case routes the server
serves (``/v1/customers.get_or_create``; see :mod:`autumn_django.contract`).

Keyword arguments follow the API's fields. A keyword left out is not sent; a
keyword given as ``None`` is sent as JSON ``null`` (which clears the field in
``update_customer``). Responses are returned as decoded JSON, unchanged, so a
field Autumn adds tomorrow is there without a release of ours; but only once
they are checked against the contract (:func:`contract.answer_problem`): an
answer that breaks it raises :class:`InvalidResponse` and nothing of it is
returned.

Retries (429, 500, 502, 503, 504 and connection failures, with exponential
backoff and jitter, honouring ``Retry-After``) are urllib3's ``Retry`` mounted
on the session. Every operation here is idempotent by customer id, so retrying
is safe; the client never sends an ``Idempotency-Key``, because Autumn refuses a
reused key with 409 rather than replaying the first answer, so a retried
request carrying one would fail. Two results of that to know: a ``delete``
retried after its first attempt succeeded unseen answers 404, and so does a
rename (``new_customer_id``) retried the same way; the sync engine reads both.

Each operation has a total deadline (``deadline`` seconds, retries and their
waits included; by default every attempt's connect and read timeouts once).
The per-read timeouts alone let a server that drips a byte at a time hold a
thread for ever. A ContextVar carries the operation's deadline down the
stack: the connections shrink their connect timeout, and the timeout of every
read of the status line, headers and body, to what is left of it, and
``_Retry`` starts no backoff or ``Retry-After`` wait that would end past it.
Bodies are read in pieces and only so far: a 200 up to ``max_answer_bytes``,
an error for its first ``max_error_bytes``.

Every failure is an :class:`~autumn_django.exceptions.AutumnError` whose text
comes from the exception's type and the answer, never from an exception's
message (which may hold the secret key), and which is raised without a
``__context__``. A 404 is :class:`NotFound` only with Autumn's own
``*_not_found`` code.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from html import unescape
from typing import Any, Literal

import django
import requests
import urllib3
from django.core.serializers.json import DjangoJSONEncoder
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.util.retry import Retry

from . import __version__, conf, contract, pacing
from .contract import UNSET
from .exceptions import (
    AutumnAPIError,
    AutumnConnectionError,
    AutumnError,
    AutumnImproperlyConfigured,
    AutumnRequestError,
    InvalidRequest,
    InvalidResponse,
    NoCallSlot,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    error_class_for_status,
)
from .pacing import LocalPacer, Pacer

logger = logging.getLogger("autumn_django.client")

__all__ = [
    "UNSET",
    "AutumnClient",
    "RateLimiter",
    "client_from_settings",
    "bulk_client",
    "get_client",
]


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest ``Retry-After`` a RateLimited or ServiceUnavailable reports.
MAX_REPORTED_RETRY_AFTER = 24 * 3600.0


# --- the deadline of one operation ----------------------------------------------


class _Operation:
    """One call's deadline on the ``time.monotonic()`` clock, and whether it
    cut the call short."""

    __slots__ = ("deadline", "seconds", "expired", "route", "pacer", "pushed_back")

    def __init__(self, seconds: float, route: str = "", pacer: Pacer | None = None) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.route, self.pacer = route, pacer
        self.pushed_back = False  # a 429 or 5xx was retried: Autumn is pushing back

    def left(self) -> float:
        return self.deadline - time.monotonic()


#: The operation under way in this thread (or task): set by AutumnClient._call
#: around the request, read by _Retry, the connections and the body reader.
_operation: ContextVar[_Operation | None] = ContextVar("autumn_django_operation", default=None)


class _Retry(Retry):
    """urllib3's Retry, with a ceiling on how long ``Retry-After`` may make us
    sleep (a thread serving a page must not wait minutes on a rate limit), and
    no wait that would end past the operation's deadline: then the retries
    stop and the last answer (or error) is the operation's."""

    max_retry_after = 30.0
    _wait: float | None = None  # decided by increment(), slept by sleep()

    def get_retry_after(self, response: Any) -> float | None:
        try:
            value = super().get_retry_after(response)
        except Exception:  # an unreadable Retry-After: back off as without one
            return None
        if value is None or not math.isfinite(value):
            return None
        return min(max(value, 0.0), self.max_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _Retry:
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = new._next_wait(response)
        operation = _operation.get()
        if operation is not None and wait >= operation.left():
            operation.expired = True
            reason = error or urllib3.exceptions.ResponseError("the deadline leaves no time to retry")
            raise MaxRetryError(_pool, url, reason)
        new._wait = wait
        if operation is not None and (error is not None or (response is not None and response.status >= 429)):
            operation.pushed_back = True
        if response is not None and response.status == 429 and operation is not None and operation.pacer:
            # Every process sharing the budget waits as long as this one will.
            operation.pacer.pause(operation.route, wait)
        if response is not None:
            # Thrown away rather than drained: an error body may drip for ever.
            response.close()
        return new

    def _next_wait(self, response: Any) -> float:
        if self.respect_retry_after_header and response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after:
                return retry_after
        return self.get_backoff_time()

    def sleep(self, response: Any = None) -> None:
        wait = self._wait if self._wait is not None else self._next_wait(response)
        if wait > 0:
            time.sleep(wait)
        operation = _operation.get()
        if operation is not None and operation.pacer is not None:
            # A retry is a call too: it takes its slot in the budget.
            operation.pacer.wait(operation.route, max_wait=max(operation.left(), 0.001))


class _DeadlineReader(io.RawIOBase):
    """The socket reader under an HTTP response (status line, headers and
    body): each read waits at most what is left of the operation's deadline,
    so a server that drips a byte at a time cannot outlast it."""

    def __init__(self, raw: Any, sock: socket.socket) -> None:
        self._raw, self._sock = raw, sock

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def readinto(self, buffer: Any) -> int | None:
        operation = _operation.get()
        if operation is not None:
            left = operation.left()
            if left <= 0:
                operation.expired = True
                raise TimeoutError("the operation's deadline passed")
            current = self._sock.gettimeout()
            if current is None or current > left:
                self._sock.settimeout(left)
        try:
            return int(self._raw.readinto(buffer))
        except TimeoutError:
            if operation is not None and operation.left() <= 0:
                operation.expired = True
            raise

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock))


def _shrink_connect_timeout(connection: HTTPConnection) -> None:
    operation = _operation.get()
    if operation is None:
        return
    left = operation.left()
    if left <= 0:
        operation.expired = True
        raise ConnectTimeoutError(connection, "The operation's deadline passed before connecting.")
    timeout = connection.timeout
    if not isinstance(timeout, (int, float)) or timeout > left:
        connection.timeout = left


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        _shrink_connect_timeout(self)
        return super()._new_conn()


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        _shrink_connect_timeout(self)
        return super()._new_conn()


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter over connections that keep the operation's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# --- pacing and auth -------------------------------------------------------------


#: The in-process pacer, under the name it had before shared pacing existed.
RateLimiter = LocalPacer


class _BearerAuth(requests.auth.AuthBase):
    """Adds the Authorization header at send time, so the key lives only here
    and not in the session's headers, and its repr shows nothing of it."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


class AutumnClient:
    """A connection-pooled, retrying client for one secret key.

    Safe to share between threads: a ``requests.Session`` with a pooled
    adapter holds no per-request state (the deadline of the operation under
    way is a ContextVar). Use :func:`get_client` for the one configured from
    ``settings.AUTUMN``.

    ``deadline`` is how many seconds one operation may take in all: connecting,
    every retry and its wait, and reading the whole answer. By default each
    attempt may use its timeouts once: ``(connect + read) * (max_retries + 1)``,
    72 s for the default ``TIMEOUT`` and ``MAX_RETRIES``. Pacing by
    ``rate_limits`` happens before it starts. DNS lookups are not bounded by it.
    """

    #: The most bytes read of a 200's body; a longer one is an InvalidResponse.
    max_answer_bytes = 10 * 1024 * 1024
    #: The most bytes read of an error's body, for its code and message.
    max_error_bytes = 16 * 1024

    def __init__(
        self,
        secret_key: str,
        *,
        base_url: str = contract.BASE_URL,
        api_version: str = contract.DEFAULT_API_VERSION,
        timeout: float | tuple[float, float] = conf.DEFAULTS["TIMEOUT"],
        max_retries: int = conf.DEFAULTS["MAX_RETRIES"],
        deadline: float | None = None,
        pool_size: int = 10,
        backoff_factor: float = 0.5,
        rate_limits: Mapping[str, float] | None = None,
        pacer: Pacer | None = None,
        pacing_wait: float | None = None,
    ) -> None:
        problem = conf.secret_key_problem(secret_key)
        if problem:
            raise AutumnImproperlyConfigured(f"The Autumn secret key {problem}")
        version = contract.parse_api_version(api_version)
        if version is None:
            raise AutumnImproperlyConfigured(f"{api_version!r} is not an Autumn API version.")
        self._auth = _BearerAuth(secret_key)  # the only place the key is kept
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.version = version
        self.env = contract.key_env(secret_key)
        self.timeout = conf.normalize_timeout(timeout)
        self.max_retries = max_retries
        if deadline is None:
            deadline = sum(self.timeout) * (max_retries + 1)
        elif isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0:
            raise ValueError(f"deadline must be a positive number of seconds, not {deadline!r}.")
        self.deadline = float(deadline)
        self.session = self._create_session(pool_size, backoff_factor)
        #: What paces this client's calls (and their retries): ``pacer``, or
        #: a pacer of its own for ``rate_limits``; None: not paced.
        self.rate_limiter: Pacer | None = pacer or (LocalPacer(rate_limits) if rate_limits else None)
        #: The longest a call waits for its slot (None: as long as it takes).
        self.pacing_wait = pacing_wait
        self.calls: Counter[str] = Counter()  # per route, for summaries
        #: Calls that met a 429, a 5xx or a connection failure (retried or
        #: not): what autumn_sync's adaptive concurrency backs off on.
        self.pushbacks = 0
        self._thread = threading.local()
        self._calls_lock = threading.Lock()

    def thread_pushbacks(self) -> int:
        """:attr:`pushbacks` of the calls made by this thread only (what one
        request of a thread pool met, for the adaptive concurrency)."""
        return int(getattr(self._thread, "pushbacks", 0))

    def _create_session(self, pool_size: int, backoff_factor: float) -> requests.Session:
        retry = _Retry(
            total=self.max_retries,
            connect=self.max_retries,
            read=self.max_retries,
            status=self.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor,
            backoff_max=10.0,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = _Adapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
        session = requests.Session()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.auth = self._auth
        session.trust_env = False  # no proxy or .netrc credentials slipped in
        session.headers.update(
            {
                "x-api-version": self.api_version,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": (
                    f"autumn-django/{__version__} django/{django.get_version()} "
                    f"python-requests/{requests.__version__}"
                ),
            }
        )
        return session

    def __repr__(self) -> str:
        return f"<AutumnClient base_url={self.base_url!r} api_version={self.api_version!r} env={self.env!r}>"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> AutumnClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def uses_cursor_pagination(self) -> bool:
        return contract.uses_cursor_pagination(self.version)

    # --- operations -----------------------------------------------------------

    def get_or_create_customer(
        self,
        customer_id: str | None,
        *,
        name: str | None = UNSET,
        email: str | None = UNSET,
        fingerprint: str | None = UNSET,
        metadata: Mapping[str, Any] = UNSET,
        stripe_id: str | None = UNSET,
        create_in_stripe: bool = UNSET,
        auto_enable_plan_id: str = UNSET,
        send_email_receipts: bool = UNSET,
        expand: Sequence[str] = UNSET,
    ) -> dict[str, Any]:
        """The customer with this id, created if new.

        For an existing customer Autumn only fills ``name`` and ``email`` that
        are empty, and ignores ``metadata``, ``fingerprint`` and ``stripe_id``:
        call :meth:`update_customer` to change them. ``customer_id=None`` with
        an ``email`` finds or makes an id-less customer by that email.
        """
        if customer_id is not None:
            _check_customer_id("customer_id", customer_id, contract.GET_OR_CREATE)
        return self._call(contract.GET_OR_CREATE, _fields(locals()))

    def get_customer(self, customer_id: str, *, expand: Sequence[str] = UNSET) -> dict[str, Any]:
        """One customer; :class:`NotFound` when there is none."""
        _check_customer_id("customer_id", customer_id, contract.GET)
        return self._call(contract.GET, _fields(locals()))

    def list_customers(
        self,
        *,
        limit: int = UNSET,
        offset: int = UNSET,
        start_cursor: str = UNSET,
        search: str = UNSET,
        plans: Sequence[Mapping[str, Any]] = UNSET,
        subscription_status: Literal["active", "scheduled"] = UNSET,
        processors: Sequence[str] = UNSET,
        sort_order: Literal["asc", "desc"] = UNSET,
        created_at_range: Mapping[str, int] = UNSET,
    ) -> dict[str, Any]:
        """One page of customers, newest first by default, as Autumn returns it.

        The page's shape follows the API version: at 2.1 and 2.2 ``{"list",
        "has_more", "offset", "limit", "total", ...}`` paged by ``offset``; from
        2.3 ``{"list", "next_cursor"}`` paged by ``start_cursor``. Autumn drops
        fields it does not know silently, so a field of the other style is
        refused here with ``ValueError`` rather than ignored.
        """
        fields = _fields(locals())
        cursor_only = {"start_cursor", "processors", "sort_order", "created_at_range"}
        wrong = {"offset"} if self.uses_cursor_pagination else cursor_only
        misplaced = sorted(wrong & fields.keys())
        if misplaced:
            style = "cursor" if self.uses_cursor_pagination else "offset"
            raise ValueError(
                f"customers.list at API {self.api_version} pages by {style}; "
                f"it does not take {', '.join(misplaced)}."
            )
        return self._call(contract.LIST, fields)

    def iter_customers(
        self,
        *,
        page_size: int = contract.MAX_LIST_LIMIT,
        search: str = UNSET,
        plans: Sequence[Mapping[str, Any]] = UNSET,
        subscription_status: Literal["active", "scheduled"] = UNSET,
    ) -> Iterator[dict[str, Any]]:
        """Every customer matching the filters, each once, page after page.

        At 2.3+ this follows ``next_cursor``. At 2.1 and 2.2 the pages are by
        offset over a list sorted newest first, where a customer created
        meanwhile shifts every later item one place down and a customer
        deleted meanwhile shifts them up. Each page is therefore asked for
        with an overlap of a few items, and items already yielded (or newer
        than the last one yielded) are skipped by their ``created_at``: no
        customer is yielded twice, and up to ``overlap`` deletions between two
        pages cost none. Customers created after iteration began may be left
        out, in both styles.
        """
        filters = _fields(locals())
        del filters["page_size"]
        if self.uses_cursor_pagination:
            cursor: str | None = ""
            while cursor is not None:
                page = self.list_customers(limit=page_size, start_cursor=cursor, **filters)
                yield from page["list"]
                cursor = page.get("next_cursor") or None
        else:
            yield from self._iter_offset_pages(page_size, filters)

    def _iter_offset_pages(self, page_size: int, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        overlap = min(page_size - 1, max(1, page_size // 20))
        floor: float = float("inf")  # created_at of the last customer yielded
        at_floor: set[Any] = set()  # ids yielded with that created_at
        offset = 0
        while True:
            page = self.list_customers(limit=page_size, offset=offset, **filters)
            items = page["list"]
            for customer in items:
                created = customer.get("created_at") or 0
                key = customer.get("id") or customer.get("email")
                if created > floor or (created == floor and key in at_floor):
                    continue
                if created < floor:
                    floor, at_floor = created, set()
                at_floor.add(key)
                yield customer
            if len(items) < page_size:
                return
            offset += len(items) - overlap

    def update_customer(
        self,
        customer_id: str,
        *,
        name: str | None = UNSET,
        email: str | None = UNSET,
        fingerprint: str | None = UNSET,
        metadata: Mapping[str, Any] | None = UNSET,
        stripe_id: str | None = UNSET,
        send_email_receipts: bool = UNSET,
        new_customer_id: str = UNSET,
    ) -> dict[str, Any]:
        """Change a customer; returns it whole, under its new id after a rename.

        ``metadata`` is merged into what Autumn holds, and a key set to ``None``
        is removed. ``None`` for ``name``, ``email``, ``fingerprint`` or
        ``stripe_id`` clears it.
        """
        _check_customer_id("customer_id", customer_id, contract.UPDATE)
        if new_customer_id is not UNSET:
            _check_customer_id("new_customer_id", new_customer_id, contract.UPDATE)
        return self._call(contract.UPDATE, _fields(locals()))

    def delete_customer(self, customer_id: str, *, delete_in_stripe: bool = UNSET) -> dict[str, Any]:
        """Delete a customer. Not idempotent at Autumn: a second call is 404."""
        _check_customer_id("customer_id", customer_id, contract.DELETE)
        return self._call(contract.DELETE, _fields(locals()))

    # --- transport ------------------------------------------------------------

    def _call(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        pacer = self.rate_limiter
        if pacer is not None:
            pacer.wait(route, max_wait=self.pacing_wait)
        with self._calls_lock:
            self.calls[route] += 1
        operation = _Operation(self.deadline, route, pacer)
        token = _operation.set(operation)
        try:
            outcome = self._exchange(route, payload, operation)
        finally:
            _operation.reset(token)
        if operation.pushed_back or isinstance(outcome, (RateLimited, ServerError, AutumnConnectionError)):
            with self._calls_lock:
                self.pushbacks += 1
            self._thread.pushbacks = self.thread_pushbacks() + 1
        if isinstance(outcome, RateLimited) and pacer is not None and outcome.status == 429:
            pacer.pause(route, outcome.retry_after or 1.0)  # retries ran out: the others wait too
        if isinstance(outcome, AutumnError):
            # Raised here, outside any except block, so that it carries no
            # __context__: the exception it replaces may hold the key.
            raise outcome
        return outcome

    def _exchange(
        self, route: str, payload: dict[str, Any], operation: _Operation
    ) -> dict[str, Any] | AutumnError:
        """One operation: its answer, or the error to raise (returned, not raised)."""
        path = contract.path(route)
        started = time.monotonic()
        try:
            body = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
            response = self.session.post(
                self.base_url + path, data=body, timeout=self.timeout, allow_redirects=False, stream=True
            )
        except NoCallSlot as refused:  # pacing, before a retry: as retryable as a 429
            return refused
        except Exception as exc:
            logger.debug("POST %s failed after %.1f ms: %s", path, _ms_since(started), type(exc).__name__)
            if _is_transport_error(exc):
                cause = self._cause(exc, operation)
                return AutumnConnectionError(f"{route}: no answer from {self.base_url} ({cause})")
            hint = ""
            if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
                hint = '; check AUTUMN["BASE_URL"]'
            return AutumnRequestError(f"{route}: the request could not be made ({type(exc).__name__}){hint}")
        logger.debug("POST %s -> %s in %.1f ms", path, response.status_code, _ms_since(started))
        try:
            return self._answer(route, payload, response)
        except Exception as exc:
            logger.debug("POST %s: reading the answer failed: %s", path, type(exc).__name__)
            if _is_transport_error(exc):
                cause = self._cause(exc, operation)
                return AutumnConnectionError(
                    f"{route}: the answer from {self.base_url} did not arrive in full ({cause})"
                )
            return InvalidResponse(
                response.status_code,
                "invalid_response",
                f"Autumn's answer could not be read ({type(exc).__name__}).",
                operation=route,
            )
        finally:
            response.close()

    def _answer(
        self, route: str, payload: dict[str, Any], response: requests.Response
    ) -> dict[str, Any] | AutumnError:
        status = response.status_code
        if status != 200:
            return self._error(route, response)
        data, complete = _read(response, self.max_answer_bytes, refuse_declared=True)
        if not complete:
            return InvalidResponse(
                200,
                "invalid_response",
                f"Autumn's answer is larger than {self.max_answer_bytes // (1024 * 1024)} MB; "
                "it was not read.",
                operation=route,
            )
        data = data.replace(self._auth.key.encode(), b"***")
        try:
            answer = json.loads(data, parse_constant=_refuse_constant)
        except RecursionError:
            return self._invalid(route, "a body that is not JSON (nested too deeply to decode)", data)
        except Exception as exc:
            return self._invalid(route, f"a body that is not JSON ({type(exc).__name__})", data)
        problem = contract.answer_problem(route, answer, env=self.env, request=payload)
        if problem:
            return self._invalid(route, f"an answer that breaks its contract: {problem}", data)
        return answer  # an object: answer_problem checked

    def _invalid(self, route: str, what: str, data: bytes) -> InvalidResponse:
        return InvalidResponse(
            200,
            "invalid_response",
            self._redact(f"Autumn answered 200 with {what}."),
            body=self._redact(_summarize(_decode(data[: self.max_error_bytes]))),
            operation=route,
        )

    def _error(self, route: str, response: requests.Response) -> AutumnAPIError:
        status = response.status_code
        try:
            prefix, _ = _read(response, self.max_error_bytes)
        except Exception:  # dropped or past the deadline: the status still says enough
            prefix = b""
        text = _decode(prefix.replace(self._auth.key.encode(), b"***"), response.encoding)
        try:
            body: Any = json.loads(text, parse_constant=_refuse_constant)
        except Exception:
            body = None
        if contract.nesting_depth(body, 20) > 20:
            body = None  # kept shallow: the error is pickled and logged
        summary = self._redact(_summarize(text))
        env = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            code = body.get("code")
            code = code[:100] if isinstance(code, str) and code else contract.default_error_code(status)
            message = body["message"]
            env = body.get("env") if body.get("env") in contract.ENVS else None
        else:
            body = summary if body is None else body
            code = contract.default_error_code(status)
            message = summary or f"HTTP {status} {response.reason or ''}".strip()
        message = _shorten(self._redact(message), 1000)
        body = _redact_json(body, self._auth.key)
        kwargs: dict[str, Any] = {"env": env, "body": body, "operation": route}
        if 300 <= status < 400:
            location = _shorten(self._redact(str(response.headers.get("Location"))), 200)
            message = f'Autumn answered with a redirect to {location!r}; check AUTUMN["BASE_URL"].'
        if status == 404 and not (isinstance(body, dict) and contract.is_not_found_code(body.get("code"))):
            return InvalidResponse(
                404,
                code,
                f"{self.base_url} answered 404 without Autumn's error body ({_shorten(message, 200)}): "
                'it is not Autumn\'s API, or not this route; check AUTUMN["BASE_URL"].',
                **kwargs,
            )
        if 200 <= status < 300:
            return InvalidResponse(
                status, "invalid_response", f"Autumn answered {status}, not 200.", **kwargs
            )
        cls = error_class_for_status(status)
        if cls in (RateLimited, ServiceUnavailable):
            kwargs["retry_after"] = _retry_after(response)
        return cls(status, code, message, **kwargs)

    def _cause(self, exc: BaseException, operation: _Operation) -> str:
        cause = _describe_transport_error(exc)
        if operation.expired or operation.left() <= 0:
            return f"{cause}; gave up at the {operation.seconds:g} s deadline"
        return cause

    def _redact(self, text: str) -> str:
        return text.replace(self._auth.key, "***")


def _fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request body: every keyword the caller gave, ``None`` included."""
    return {name: value for name, value in arguments.items() if name != "self" and value is not UNSET}


def _check_customer_id(field: str, value: object, route: str) -> None:
    problem = contract.customer_id_problem(value)
    if problem:
        raise InvalidRequest(None, "invalid_inputs", f"{field}: {problem}", operation=route)


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _read(response: requests.Response, limit: int, *, refuse_declared: bool = False) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, in small pieces (each read within
    the deadline), and whether that was all of it. With ``refuse_declared`` a
    body whose Content-Length is over the limit is not read at all."""
    declared = response.headers.get("Content-Length", "")
    if refuse_declared and declared.isdigit() and int(declared) > limit:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(16 * 1024):
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def _decode(data: bytes, encoding: str | None = None) -> str:
    try:
        return data.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_transport_error(exc: BaseException) -> bool:
    """A failure to get an answer across (as opposed to a request that could
    not be made): the connection or the exchange on it failed."""
    if isinstance(
        exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    ):
        return True
    if isinstance(exc, (ValueError, requests.exceptions.ContentDecodingError)):
        return False  # requests' InvalidURL, InvalidHeader...; a body that would not decompress
    return isinstance(exc, (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact_json(value: Any, key: str) -> Any:
    """``value`` (shallow decoded JSON) with the key replaced in every string."""
    if isinstance(value, str):
        return value.replace(key, "***")
    if isinstance(value, list):
        return [_redact_json(item, key) for item in value]
    if isinstance(value, dict):
        return {_redact_json(name, key): _redact_json(item, key) for name, item in value.items()}
    return value


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), within reason."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = Retry().parse_retry_after(value)
        except Exception:
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_REPORTED_RETRY_AFTER)


# Each pattern stops at the next "<", so a page of unclosed tags is read in
# linear time (a lazy ".*?" up to "</title>" made it quadratic).
_TITLE_OPEN_RE = re.compile(r"<title\b[^<>]*>", re.I)
_TITLE_CLOSE_RE = re.compile(r"</title\s*>", re.I)
_TAG_RE = re.compile(r"<[^<>]*>")


def _summarize(text: str, limit: int = 200, *, read: int = 16 * 1024) -> str:
    """A readable one-line account of a body that is not the JSON expected:
    an HTML error page by its title, plain text as it is, cut to ``limit``.
    Only the first ``read`` characters are looked at, in linear time."""
    text = text[:read]
    if "<" in text and ">" in text:
        opening = _TITLE_OPEN_RE.search(text)
        title = ""
        if opening:
            closing = _TITLE_CLOSE_RE.search(text, opening.end())
            title = text[opening.end() : closing.start() if closing else opening.end() + limit]
            title = " ".join(unescape(_TAG_RE.sub(" ", title)).split())
        text = title or unescape(_TAG_RE.sub(" ", text))
    text = " ".join(text.split())
    return _shorten(text, limit)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it wraps (arguments, ``reason``, causes)."""
    found: list[BaseException] = []
    queue = [exc]
    while queue and len(found) < 32:
        item = queue.pop(0)
        if any(item is seen for seen in found):
            continue
        found.append(item)
        inner = [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
        queue.extend(candidate for candidate in inner if isinstance(candidate, BaseException))
    return found


def _describe_transport_error(exc: BaseException) -> str:
    """The cause of a failed exchange, in words; never the exception's text.

    Order matters: urllib3's NewConnectionError (refused, unreachable, and
    its subclass NameResolutionError) subclasses ConnectTimeoutError, and a
    connect timeout wraps the socket's TimeoutError."""
    causes = _causes(exc)

    def found(*types: type[BaseException]) -> bool:
        return any(isinstance(cause, types) for cause in causes)

    if found(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return "DNS lookup failed"
    if found(ConnectionRefusedError):
        return "connection refused"
    if found(urllib3.exceptions.NewConnectionError):
        return "could not connect"
    if found(ConnectTimeoutError, requests.ConnectTimeout):
        return "timed out connecting"
    if found(urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout, TimeoutError):
        return "timed out reading the answer"
    if found(ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return "TLS failed"
    if found(
        urllib3.exceptions.ProtocolError,
        ConnectionError,
        http.client.HTTPException,
        requests.exceptions.ChunkedEncodingError,
    ):
        return "connection dropped"
    return f"connection failed ({type(exc).__name__})"


def client_from_settings(settings: conf.AutumnSettings, **overrides: Any) -> AutumnClient:
    """A new client for validated settings; ``overrides`` replace any of the
    constructor's keywords (``timeout``, ``max_retries``, ``deadline``,
    ``pool_size``...)."""
    options: dict[str, Any] = {
        "base_url": settings.base_url,
        "api_version": settings.api_version,
        "timeout": settings.timeout,
        "max_retries": settings.max_retries,
        "pacer": pacing.pacer_for(settings),
        # A call never waits for its slot longer than it may take in all.
        "pacing_wait": min(settings.rate_limit_max_wait, overrides.get("deadline") or math.inf),
        **overrides,
    }
    return AutumnClient(settings.secret_key, **options)


_clients: dict[tuple[Any, ...], AutumnClient] = {}
_clients_lock = threading.Lock()


def get_client(**overrides: Any) -> AutumnClient:
    """The client for the current ``settings.AUTUMN``.

    One per distinct configuration (and ``overrides``, which must be
    hashable, e.g. the admin's shorter ``timeout``), shared by every thread,
    so connections are pooled across requests; a changed setting
    (``override_settings`` in tests) gets its own client at once.
    """
    settings = conf.load()
    key = (settings.connection, *sorted(overrides.items()))
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = client_from_settings(settings, **overrides)
    return client


def bulk_client(concurrency: int, *, share: int = 1) -> AutumnClient:
    """A new client for bulk work (``autumn_sync``, its tasks): a pooled
    connection for each of ``concurrency`` threads, and paced to
    ``AUTUMN["RATE_LIMITS"]`` (Autumn's published limits less 10% unless set).

    ``share``: the client of one of that many processes of one
    ``autumn_sync``. Without ``RATE_LIMIT_STORE`` (or while Redis cannot be
    reached) each paces itself to its share of the budget, so that together
    they keep to it; with it, they share the one budget in Redis as every
    process of the site does."""
    settings = conf.load()
    pacer = pacing.pacer_for(settings, share=share)
    # autumn_sync waits for its slots as long as it takes (pacing_wait None).
    return client_from_settings(settings, pool_size=concurrency, pacing_wait=None, pacer=pacer)
