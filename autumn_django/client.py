"""An HTTP client for Autumn's customers API.

One method per operation, named for it, on the snake_case routes the server
serves (``/v1/customers.get_or_create``; see :mod:`autumn_django.contract`).

Keyword arguments follow the API's fields. A keyword left out is not sent; a
keyword given as ``None`` is sent as JSON ``null`` (which clears the field in
``update_customer``). Responses are returned as decoded JSON, unchanged, so a
field Autumn adds tomorrow is there without a release of ours.

Retries (429, 500, 502, 503, 504 and connection failures, with exponential
backoff and jitter, honouring ``Retry-After``) are urllib3's ``Retry`` mounted
on the session. Every operation here is idempotent by customer id, so retrying
is safe; the client never sends an ``Idempotency-Key``, because Autumn refuses a
reused key with 409 rather than replaying the first answer, so a retried
request carrying one would fail. Two results of that to know: a ``delete``
retried after its first attempt succeeded unseen answers 404, and so does a
rename (``new_customer_id``) retried the same way; the sync engine reads both.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from html import unescape
from typing import Any, Literal

import django
import requests
import urllib3
from django.core.serializers.json import DjangoJSONEncoder
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__, conf, contract
from .contract import UNSET
from .exceptions import (
    AutumnAPIError,
    AutumnConnectionError,
    AutumnImproperlyConfigured,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    error_class_for_status,
)

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


class _Retry(Retry):
    """urllib3's Retry, with a ceiling on how long ``Retry-After`` may make us
    sleep: a thread serving a page must not wait minutes on a rate limit."""

    max_retry_after = 30.0

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.max_retry_after)


class RateLimiter:
    """Paces calls per route to at most ``limits[route]`` a second, spread
    evenly, across all threads sharing it; a route not in ``limits`` is not
    paced. Spreading (rather than bursting up to the limit) keeps every one
    of Autumn's fixed one-second windows under the limit."""

    def __init__(
        self,
        limits: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = {route: rate for route, rate in limits.items() if rate}
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self, route: str) -> float:
        """Wait for ``route``'s next slot; returns the slot's time on the clock."""
        rate = self.limits.get(route)
        if not rate:
            return self._clock()
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(route, now))
            self._next[route] = slot + 1 / rate
        if slot > now:
            self._sleep(slot - now)
        return slot


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
    adapter holds no per-request state. Use :func:`get_client` for the one
    configured from ``settings.AUTUMN``.
    """

    def __init__(
        self,
        secret_key: str,
        *,
        base_url: str = contract.BASE_URL,
        api_version: str = contract.DEFAULT_API_VERSION,
        timeout: float | tuple[float, float] = conf.DEFAULTS["TIMEOUT"],
        max_retries: int = conf.DEFAULTS["MAX_RETRIES"],
        pool_size: int = 10,
        backoff_factor: float = 0.5,
        rate_limits: Mapping[str, float] | None = None,
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
        self.session = self._create_session(pool_size, backoff_factor)
        self.rate_limiter = RateLimiter(rate_limits) if rate_limits else None
        self.calls: Counter[str] = Counter()  # per route, for summaries
        self._calls_lock = threading.Lock()

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
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
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
        if self.rate_limiter is not None:
            self.rate_limiter.wait(route)
        with self._calls_lock:
            self.calls[route] += 1
        path = contract.path(route)
        body = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
        started = time.monotonic()
        try:
            response = self.session.post(
                self.base_url + path, data=body.encode(), timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            elapsed = (time.monotonic() - started) * 1000
            logger.debug("POST %s failed after %.1f ms: %s", path, elapsed, type(exc).__name__)
            raise AutumnConnectionError(
                f"{route}: no answer from {self.base_url} ({_describe_transport_error(exc)})"
            ) from None
        elapsed = (time.monotonic() - started) * 1000
        logger.debug("POST %s -> %s in %.1f ms", path, response.status_code, elapsed)
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                raise AutumnAPIError(
                    200,
                    "invalid_response",
                    "Autumn answered 200 with a body that is not JSON.",
                    body=_summarize(response),
                    operation=route,
                ) from None
            if isinstance(data, dict):
                return data
            raise AutumnAPIError(
                200,
                "invalid_response",
                "Autumn answered 200 with JSON that is not an object.",
                body=data,
                operation=route,
            )
        raise self._error(route, response)

    def _error(self, route: str, response: requests.Response) -> AutumnAPIError:
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            code = str(body.get("code") or contract.default_error_code(status))
            message = body["message"]
            env = body.get("env")
        else:
            text = _summarize(response)
            body = text if body is None else body
            code = contract.default_error_code(status)
            message = text or f"HTTP {status} {response.reason or ''}".strip()
            env = None
        message = message.replace(self._auth.key, "***")
        cls = error_class_for_status(status)
        kwargs: dict[str, Any] = {"env": env, "body": body, "operation": route}
        if cls in (RateLimited, ServiceUnavailable):
            kwargs["retry_after"] = _retry_after(response)
        if 300 <= status < 400:
            message = (
                f"Autumn answered with a redirect to {response.headers.get('Location')!r}; "
                'check AUTUMN["BASE_URL"].'
            )
        return cls(status, code, message, **kwargs)


def _fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request body: every keyword the caller gave, ``None`` included."""
    return {name: value for name, value in arguments.items() if name != "self" and value is not UNSET}


def _check_customer_id(field: str, value: object, route: str) -> None:
    problem = contract.customer_id_problem(value)
    if problem:
        raise InvalidRequest(None, "invalid_inputs", f"{field}: {problem}", operation=route)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG_RE = re.compile(r"<[^>]+>")


def _summarize(response: requests.Response, limit: int = 200) -> str:
    """A readable one-line account of a body that is not the JSON expected:
    an HTML error page by its title, plain text as it is, cut to ``limit``."""
    text = response.text or ""
    if "<" in text and ">" in text:
        title = _TITLE_RE.search(text)
        text = title[1] if title else _TAG_RE.sub(" ", text)
        text = unescape(text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_transport_error(exc: requests.RequestException) -> str:
    # Once retries run out requests reports a read timeout as a ConnectionError
    # wrapping urllib3's MaxRetryError; the reason inside tells them apart.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(reason, urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed or was dropped"
    return type(exc).__name__


def client_from_settings(settings: conf.AutumnSettings, **overrides: Any) -> AutumnClient:
    """A new client for validated settings; ``overrides`` replace any of the
    constructor's keywords (``timeout``, ``max_retries``, ``pool_size``...)."""
    options: dict[str, Any] = {
        "base_url": settings.base_url,
        "api_version": settings.api_version,
        "timeout": settings.timeout,
        "max_retries": settings.max_retries,
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


def bulk_client(concurrency: int) -> AutumnClient:
    """A new client for bulk work (``autumn_sync``, its tasks): a pooled
    connection for each of ``concurrency`` threads, and paced to
    ``AUTUMN["RATE_LIMITS"]`` (Autumn's published limits less 10% unless set)."""
    settings = conf.load()
    return client_from_settings(settings, pool_size=concurrency, rate_limits=settings.rate_limits)
