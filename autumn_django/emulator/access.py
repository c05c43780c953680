"""What Autumn checks before a route runs: the secret key, the API version,
the rate limits, the ``Idempotency-Key`` and the key's scopes.

Each check either passes or raises :class:`~.wire.Refusal` with the error
Autumn gives; the emulator runs them in Autumn's order (see
:meth:`~.core.Emulator.handle`).

Contract notes: choices made where Autumn's customers API contract is silent.

* All keys belong to one organisation; the key's prefix picks the
  environment, as at Autumn. With no keys given, any well-formed key
  (``am_sk_test_`` or ``am_sk_live_`` and 42 letters and digits) is
  accepted; an unknown one is ``invalid_secret_key``, whose message says
  what a valid key looks like instead of showing the key's first characters
  as Autumn's does.
* A publishable key gets 401 ``endpoint_not_public`` (message ours).
* Requests without ``x-api-version`` are served at ``default_api_version``
  (Autumn would pick one from the organisation's creation date). Versions
  below 2.1 are answered 400 ``unsupported_api_version``: the emulator does
  not reproduce the 1.x response shapes.
* A reused ``Idempotency-Key`` is refused with the message ours.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import contract
from ..contract import ApiVersion
from .wire import JSONDict, Refusal, error_response, too_many_requests

#: The name of the org-wide cap among the rate limits (the others are routes).
ORG_CAP = "org_cap"
_IDEMPOTENCY_SECONDS = 24 * 3600
#: What a valid secret key looks like, for the invalid_secret_key message.
VALID_KEY = "a valid one is am_sk_test_ or am_sk_live_ followed by 42 letters and digits"


class Keys:
    """The secret keys accepted, each with its scopes (None: every scope).

    With no keys given any well-formed key is accepted; once one is, only
    the keys given are.
    """

    def __init__(
        self,
        lock: threading.RLock,
        secret_keys: Iterable[str] | Mapping[str, Iterable[str] | None] | None = None,
    ) -> None:
        self._lock = lock
        self._keys: dict[str, frozenset[str] | None] | None = None
        if secret_keys is not None:
            self._keys = {}
            items = (
                secret_keys.items()
                if isinstance(secret_keys, Mapping)
                else ((key, None) for key in secret_keys)
            )
            for key, scopes in items:
                self.add(key, scopes)

    def add(self, key: str, scopes: Iterable[str] | None = None) -> None:
        with self._lock:
            if self._keys is None:
                self._keys = {}
            self._keys[key] = frozenset(scopes) if scopes is not None else None

    def authenticate(self, authorization: str | None) -> tuple[str, frozenset[str] | None]:
        """The environment and scopes of the ``Authorization`` header's key."""
        parts = (authorization or "").split(" ")
        if len(parts) != 2 or parts[0] != "Bearer" or not parts[1]:
            raise Refusal(
                error_response(
                    401, "no_secret_key", "Secret key not found in Authorization header", "sandbox"
                )
            )
        token = parts[1]
        if token.startswith(contract.PUBLISHABLE_KEY_PREFIX):
            raise Refusal(
                error_response(
                    401,
                    "endpoint_not_public",
                    "This endpoint cannot be called with a publishable key; use a secret key",
                    "sandbox",
                )
            )
        env = contract.key_env(token)
        if env is None:
            raise Refusal(
                error_response(401, "invalid_request", "Invalid authorization token prefix", "sandbox")
            )
        with self._lock:
            keys = self._keys
            known = token in keys if keys is not None else bool(contract.SECRET_KEY_RE.match(token))
            scopes = keys.get(token) if keys is not None else None
        if not known:
            # Worded without any part of the key (Autumn shows its first 15
            # characters, masked; a deliberate difference, so that no test
            # log or page shows a piece of a key): what a valid one looks
            # like, or that it is well formed but not one of this emulator's.
            if contract.SECRET_KEY_RE.fullmatch(token):
                message = "Invalid secret key: well formed, but not one of the keys this emulator was given."
            else:
                message = f"Invalid secret key: {VALID_KEY}."
            raise Refusal(error_response(401, "invalid_secret_key", message, "sandbox"))
        return env, scopes


def api_version(value: str, env: str) -> ApiVersion:
    """The version an ``x-api-version`` value asks for, if the emulator serves it."""
    version = contract.parse_api_version(value)
    if version is None:
        raise Refusal(
            error_response(400, "invalid_api_version", f'"{value}" is not a valid API version', env)
        )
    if version < contract.MIN_SUPPORTED_VERSION:
        raise Refusal(
            error_response(
                400,
                "unsupported_api_version",
                f"The emulator serves API 2.1 and later, not {value}",
                env,
            )
        )
    return version


def check_scopes(route: str, scopes: frozenset[str] | None, env: str) -> None:
    if scopes is None:
        return
    if route in (contract.GET, contract.LIST):
        needed = {"customers:read"}
    elif route == contract.GET_OR_CREATE:
        needed = {"customers:read", "customers:write"}
    else:
        needed = {"customers:write"}
    missing = sorted(needed - scopes)
    if missing:
        raise Refusal(
            error_response(
                403, "insufficient_scopes", f"Insufficient scopes. Missing: {', '.join(missing)}", env
            )
        )


class RateLimiter:
    """Autumn's published limits, in fixed windows: one second per route
    (per customer for get_or_create and get), and the org-wide cap those two
    routes share. Callers hold the emulator's lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._windows: dict[tuple[Any, ...], tuple[float, int]] = {}

    def check(self, route: str, version: ApiVersion, env: str, body: JSONDict) -> dict[str, str]:
        """Count one request; the ``RateLimit-*`` headers of its answer."""
        now = self.clock()
        rule = contract.endpoint_rate_limit(route, version)
        allowed, remaining, reset = self._hit(self._key(route, env, body.get("customer_id")), rule, now)
        headers = {
            "RateLimit-Limit": str(rule.limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": f"{rule.limit};w={rule.window_seconds}",
        }
        if not allowed:
            raise Refusal(too_many_requests(reset, headers))
        if route in contract.ORG_CAPPED_ROUTES:
            allowed, _, _ = self._hit((env, ORG_CAP), contract.ORG_CAP, now)
            if not allowed:
                raise Refusal(
                    error_response(429, contract.default_error_code(429), "Rate limit exceeded.", env)
                )
        return headers

    def use_up(self, limit: str, env: str, version: ApiVersion, customer_id: str | None = None) -> None:
        """Count the current window of ``limit`` (a route or :data:`ORG_CAP`) as full."""
        if limit == ORG_CAP:
            key: tuple[Any, ...] = (env, ORG_CAP)
            rule = contract.ORG_CAP
        elif limit in contract.ROUTES:
            if limit in contract.ORG_CAPPED_ROUTES and customer_id is None:
                raise ValueError(f"{limit} is limited per customer: give customer_id")
            key = self._key(limit, env, customer_id)
            rule = contract.endpoint_rate_limit(limit, version)
        else:
            raise ValueError(f"Unknown limit {limit!r}; {ORG_CAP!r} or one of {', '.join(contract.ROUTES)}")
        self._windows[key] = (_window_start(rule, self.clock()), rule.limit)

    def clear(self) -> None:
        self._windows.clear()

    @staticmethod
    def _key(route: str, env: str, customer_id: Any) -> tuple[Any, ...]:
        key: tuple[Any, ...] = (env, route)
        if route in contract.ORG_CAPPED_ROUTES:
            key += (str(customer_id),)
        return key

    def _hit(self, key: tuple[Any, ...], rule: contract.RateLimit, now: float) -> tuple[bool, int, int]:
        """Count one request in a fixed window; (allowed, remaining, seconds to reset)."""
        start = _window_start(rule, now)
        window_start, count = self._windows.get(key, (start, 0))
        if window_start != start:
            count = 0
        count += 1
        self._windows[key] = (start, count)
        reset = max(1, math.ceil(start + rule.window_seconds - now))
        return count <= rule.limit, max(0, rule.limit - count), reset


def _window_start(rule: contract.RateLimit, now: float) -> int:
    return math.floor(now / rule.window_seconds) * rule.window_seconds


class IdempotencyKeys:
    """The ``Idempotency-Key`` values seen in the last 24 hours, per
    environment; a reused one is refused. Callers hold the emulator's lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    def check(self, key: str | None, env: str) -> None:
        if not key:
            return
        now = self.clock()
        seen = self._seen.get((env, key))
        if seen is not None and now - seen < _IDEMPOTENCY_SECONDS:
            raise Refusal(
                error_response(
                    409,
                    "duplicate_idempotency_key",
                    f"A request with idempotency key {key} was already received",
                    env,
                )
            )
        self._seen[(env, key)] = now

    def clear(self) -> None:
        self._seen.clear()
