"""The emulator's core: Autumn's customers API as a function of a request.

:meth:`Emulator.handle` takes a method, path, headers and body and returns the
response Autumn would give, so the HTTP server and the in-process ``responses``
transport are two thin shells over one behaviour. Everything a client can see
follows ``shared/autumn-api.md``; the fault injection (latency, error rates,
scripted failures, dropped connections) is ours, for tests and benchmarks.

Contract notes: choices made where the contract is silent.

* All keys belong to one organisation; the key's prefix picks the
  environment, as at Autumn. With no keys given, any well-formed key is
  accepted; an unknown one is ``invalid_secret_key``.
* A publishable key gets 401 ``endpoint_not_public`` (message ours).
* Requests without ``x-api-version`` are served at ``default_api_version``
  (Autumn would pick one from the organisation's creation date). Versions
  below 2.1 are answered 400 ``unsupported_api_version``: the emulator does
  not reproduce the 1.x response shapes.
* ``auto_enable_plan_id`` is checked only when a customer is created.
* A reused ``Idempotency-Key`` is refused with the message ours.
* ``stripe_id`` values must look like Stripe ids (``cus_...``); others are
  400 ``stripe_error`` as Stripe would refuse them. ``create_in_stripe``
  links a made-up ``cus_...`` id.
* Validation reports the first problem only, in zod's wording.
* Customers with equal ``created_at`` are listed newest insertion first.
* Expand-only keys carry empty values (no invoices, rewards and so on exist
  here); ``subscriptions.plan`` and ``purchases.plan`` carry the plan.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import contract
from ..contract import ApiVersion

JSONDict = dict[str, Any]


@dataclass
class Response:
    """What the emulator answers; ``drop`` means close the connection instead."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it; the Authorization header is not kept."""

    at: float
    method: str
    path: str
    route: str | None
    status: int
    env: str | None
    api_version: str | None
    headers: Mapping[str, str]
    body: Any


@dataclass
class Plan:
    id: str
    name: str | None = None
    default: bool = False
    add_on: bool = False
    version: int = 1


@dataclass
class _ScriptedFailure:
    route: str | None
    remaining: int
    status: int
    code: str | None
    message: str | None
    headers: dict[str, str]
    drop: bool


class _Refusal(Exception):
    """Stops handling with an error response (raised inside the handlers)."""

    def __init__(self, response: Response) -> None:
        self.response = response


_ALNUM = string.ascii_letters + string.digits
PLAIN_TEXT_429 = "Too many requests, please try again later."


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


class Emulator:
    """An in-memory, thread-safe Autumn customers API.

    ``secret_keys`` limits the keys accepted (a mapping gives each its scopes,
    e.g. ``{"am_sk_test_...": ["customers:read"]}``); ``plans`` are the plan ids
    that exist, ``default_plans`` those attached to every new customer.
    ``rate_limits`` turns on Autumn's published limits; ``latency_ms`` delays
    every request, half on the way in and half on the way out, varied by up
    to ``latency_jitter_ms`` either way so requests can overtake each other
    as they do on a real network; ``fail_rate`` answers that fraction of
    requests with ``fail_status`` (one status, or several picked at random).
    ``data_file`` keeps the customers across restarts.
    """

    def __init__(
        self,
        *,
        secret_keys: Iterable[str] | Mapping[str, Iterable[str] | None] | None = None,
        default_api_version: str = contract.DEFAULT_API_VERSION,
        plans: Iterable[str | Plan] = (),
        default_plans: Iterable[str] = (),
        rate_limits: bool = False,
        latency_ms: float = 0,
        latency_jitter_ms: float = 0,
        fail_rate: float = 0.0,
        fail_status: int | Iterable[int] = 503,
        data_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        log_size: int = 10_000,
        seed: int | None = None,
    ) -> None:
        if contract.parse_api_version(default_api_version) is None:
            raise ValueError(f"{default_api_version!r} is not an Autumn API version")
        self.default_api_version = default_api_version
        self.rate_limits = rate_limits
        self.latency_ms = latency_ms
        self.latency_jitter_ms = latency_jitter_ms
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.clock = clock
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._keys: dict[str, frozenset[str] | None] | None = None
        if secret_keys is not None:
            self._keys = {}
            items = (
                secret_keys.items()
                if isinstance(secret_keys, Mapping)
                else ((key, None) for key in secret_keys)
            )
            for key, scopes in items:
                self.add_key(key, scopes)
        self.plans: dict[str, Plan] = {}
        for plan in plans:
            self.add_plan(plan)
        for plan_id in default_plans:
            self.add_plan(Plan(plan_id, default=True))
        # env -> internal id -> record, in insertion order; env -> id -> internal id
        self._records: dict[str, dict[str, JSONDict]] = {"sandbox": {}, "live": {}}
        self._by_id: dict[str, dict[str, str]] = {"sandbox": {}, "live": {}}
        # env -> lower-cased email -> internal id, for the customers without an id
        self._idless: dict[str, dict[str, str]] = {"sandbox": {}, "live": {}}
        self._seq = 0
        self._windows: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._idempotency: dict[tuple[str, str], float] = {}
        self._scripted: list[_ScriptedFailure] = []
        self._scripted_delays: list[list[Any]] = []  # [route, remaining, seconds]
        self.log: deque[LoggedRequest] = deque(maxlen=log_size)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()  # "route status" -> answers, e.g. "customers.update 429"
        self._data_file = Path(data_file) if data_file else None
        self._dirty = threading.Event()
        self._generation = 0  # bumped by every write; keys the sorted cache
        self._sorted_cache: dict[str, tuple[int, list[JSONDict]]] = {}
        self._closed = threading.Event()
        if self._data_file:
            self._load()
            threading.Thread(target=self._flush_loop, name="autumn-emulator-save", daemon=True).start()

    # --- configuration --------------------------------------------------------

    def add_key(self, key: str, scopes: Iterable[str] | None = None) -> None:
        """Accept ``key`` (and, once any key is added, only the keys added)."""
        with self._lock:
            if self._keys is None:
                self._keys = {}
            self._keys[key] = frozenset(scopes) if scopes is not None else None

    def add_plan(self, plan: str | Plan) -> Plan:
        if isinstance(plan, str):
            plan = Plan(plan)
        with self._lock:
            self.plans[plan.id] = plan
        return plan

    def fail_next(
        self,
        count: int = 1,
        route: str | None = None,
        *,
        status: int = 503,
        code: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        drop: bool = False,
    ) -> None:
        """Answer the next ``count`` calls to ``route`` (any route when None)
        with ``status`` (Autumn's body for it unless ``code``/``message`` are
        given), or drop the connection without answering when ``drop``."""
        if route is not None and route not in contract.ROUTES:
            raise ValueError(f"Unknown route {route!r}; one of {', '.join(contract.ROUTES)}")
        with self._lock:
            self._scripted.append(
                _ScriptedFailure(route, count, status, code, message, dict(headers or {}), drop)
            )

    def delay_next(self, count: int = 1, route: str | None = None, *, ms: float) -> None:
        """Hold the next ``count`` calls to ``route`` (any when None) for ``ms``
        before Autumn sees them: a request stuck on the network, which a later
        request can overtake."""
        if route is not None and route not in contract.ROUTES:
            raise ValueError(f"Unknown route {route!r}; one of {', '.join(contract.ROUTES)}")
        with self._lock:
            self._scripted_delays.append([route, count, ms / 1000])

    def reset(self) -> None:
        """Forget customers, requests, counters, windows and scripted failures."""
        with self._lock:
            for env in self._records:
                self._records[env].clear()
                self._by_id[env].clear()
                self._idless[env].clear()
            self._windows.clear()
            self._idempotency.clear()
            self._scripted.clear()
            self._scripted_delays.clear()
            self.log.clear()
            self.counts.clear()
            self.statuses.clear()
            self._changed(reordered=True)

    # --- inspection (for tests) -----------------------------------------------

    def customers(self, env: str = "sandbox") -> list[JSONDict]:
        """Every customer of ``env``, newest first, as the API shows them."""
        with self._lock:
            return _detached([self._public(record) for record in self._sorted(env, "desc")])

    def customer(self, customer_id: str, env: str = "sandbox") -> JSONDict | None:
        with self._lock:
            record = self._find(env, customer_id)
            return _detached(self._public(record)) if record else None

    def requests(self, route: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [entry for entry in self.log if route is None or entry.route == route]

    def stats(self) -> JSONDict:
        """Calls per route and answers per route and status, and customers per
        environment (also served over HTTP at ``/_emulator/stats``)."""
        with self._lock:
            return {
                "calls": dict(self.counts),
                "statuses": dict(self.statuses),
                "customers": {env: len(records) for env, records in self._records.items()},
            }

    def add_customer(self, env: str = "sandbox", **fields: Any) -> JSONDict:
        """Put a customer straight into the store, as if made elsewhere
        (another app, Autumn's dashboard). ``created_at`` may be given, and
        ``plans``: plan ids (added if unknown) it holds active subscriptions to."""
        with self._lock:
            plan_ids = fields.pop("plans", ())
            record = self._new_record(env, fields.pop("id", None), fields)
            for plan_id in plan_ids:
                self._attach(record, self.plans.get(plan_id) or self.add_plan(plan_id), auto_enable=False)
            self._changed()
            return _detached(self._public(record))

    # --- the request path -----------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request exactly as Autumn would (plus any faults set up)."""
        delay = self._delay()
        held = self._held(path)
        if delay or held:
            time.sleep(delay / 2 + held)
        lower = {name.lower(): value for name, value in headers.items()}
        name = path.split("?", 1)[0].removeprefix("/v1/")
        route = name if path.startswith("/v1/") and name in contract.ROUTES else None
        env: str | None = None
        version_text: str | None = None
        try:
            parsed = _parse_body(body)
            if route is None or method.upper() != "POST":
                raise _Refusal(self._unknown_route(method, path))
            injected = self._injected_failure(route)
            if injected is not None:
                raise _Refusal(injected)
            env, scopes = self._authenticate(lower.get("authorization"))
            version_text = lower.get("x-api-version") or self.default_api_version
            version = self._api_version(version_text, env)
            with self._lock:
                limit_headers = self._rate_limit(route, version, env, parsed)
                self._check_idempotency(lower.get("idempotency-key"), env)
                self._check_scopes(route, scopes, env)
                response = self._dispatch(route, version, env, parsed)
                response.headers.update(limit_headers)
        except _Refusal as refusal:
            response = refusal.response
        self._record(method, path, route, response, env, version_text, lower, body)
        if delay:
            time.sleep(delay / 2)
        return response

    def _held(self, path: str) -> float:
        route = path.split("?", 1)[0].removeprefix("/v1/")
        with self._lock:
            for entry in self._scripted_delays:
                if entry[0] in (None, route) and entry[1] > 0:
                    entry[1] -= 1
                    self._scripted_delays = [e for e in self._scripted_delays if e[1] > 0]
                    return float(entry[2])
        return 0.0

    def _delay(self) -> float:
        """Seconds this request spends on the wire (both ways together)."""
        if not self.latency_ms and not self.latency_jitter_ms:
            return 0.0
        with self._lock:
            jitter = self._random.uniform(-self.latency_jitter_ms, self.latency_jitter_ms)
        return max(0.0, self.latency_ms + jitter) / 1000

    def _dispatch(self, route: str, version: ApiVersion, env: str, body: JSONDict) -> Response:
        handler = {
            contract.GET_OR_CREATE: self._get_or_create,
            contract.GET: self._get,
            contract.LIST: self._list,
            contract.UPDATE: self._update,
            contract.DELETE: self._delete,
        }[route]
        result = handler(env, version, body)
        return _json_response(200, result)

    def _record(
        self,
        method: str,
        path: str,
        route: str | None,
        response: Response,
        env: str | None,
        version: str | None,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = body.decode("utf-8", "replace")
        kept = {name: value for name, value in headers.items() if name != "authorization"}
        entry = LoggedRequest(
            self.clock(), method.upper(), path, route, response.status, env, version, kept, decoded
        )
        with self._lock:
            self.log.append(entry)
            self.counts[route or "unknown"] += 1
            self.statuses[f"{route or 'unknown'} {response.status}"] += 1

    # --- the checks, in Autumn's order ----------------------------------------

    def _unknown_route(self, method: str, path: str) -> Response:
        name = path.split("?", 1)[0].removeprefix("/v1/")
        if name in contract.RENAMED_ROUTES:
            hint = f" Autumn renamed it: use POST {contract.path(contract.RENAMED_ROUTES[name])}."
        elif name in contract.ROUTES:
            hint = f" {name} is served for POST only."
        else:
            hint = f" The customers routes are {', '.join(map(contract.path, contract.ROUTES))}."
        return _error(404, "not_found", f"No route {method.upper()} {path}.{hint}", "sandbox")

    def _injected_failure(self, route: str) -> Response | None:
        with self._lock:
            for failure in self._scripted:
                if failure.route in (None, route) and failure.remaining > 0:
                    failure.remaining -= 1
                    self._scripted = [f for f in self._scripted if f.remaining > 0]
                    if failure.drop:
                        return Response(0, drop=True)
                    return _failure(failure.status, failure.code, failure.message, failure.headers)
            if self.fail_rate and self._random.random() < self.fail_rate:
                statuses = [self.fail_status] if isinstance(self.fail_status, int) else list(self.fail_status)
                return _failure(self._random.choice(statuses))
        return None

    def _authenticate(self, authorization: str | None) -> tuple[str, frozenset[str] | None]:
        parts = (authorization or "").split(" ")
        if len(parts) != 2 or parts[0] != "Bearer" or not parts[1]:
            raise _Refusal(
                _error(401, "no_secret_key", "Secret key not found in Authorization header", "sandbox")
            )
        token = parts[1]
        if token.startswith(contract.PUBLISHABLE_KEY_PREFIX):
            raise _Refusal(
                _error(
                    401,
                    "endpoint_not_public",
                    "This endpoint cannot be called with a publishable key; use a secret key",
                    "sandbox",
                )
            )
        env = contract.key_env(token)
        if env is None:
            raise _Refusal(_error(401, "invalid_request", "Invalid authorization token prefix", "sandbox"))
        with self._lock:
            keys = self._keys
            known = token in keys if keys is not None else bool(contract.SECRET_KEY_RE.match(token))
            scopes = keys.get(token) if keys is not None else None
        if not known:
            raise _Refusal(
                _error(401, "invalid_secret_key", f"Invalid secret key: {token[:15]}****...", "sandbox")
            )
        return env, scopes

    def _api_version(self, value: str, env: str) -> ApiVersion:
        version = contract.parse_api_version(value)
        if version is None:
            raise _Refusal(_error(400, "invalid_api_version", f'"{value}" is not a valid API version', env))
        if version < contract.MIN_SUPPORTED_VERSION:
            raise _Refusal(
                _error(
                    400,
                    "unsupported_api_version",
                    f"The emulator serves API 2.1 and later, not {value}",
                    env,
                )
            )
        return version

    def _rate_limit(self, route: str, version: ApiVersion, env: str, body: JSONDict) -> dict[str, str]:
        if not self.rate_limits:
            return {}
        now = self.clock()
        rule = contract.endpoint_rate_limit(route, version)
        key: tuple[Any, ...] = (env, route)
        if route in contract.ORG_CAPPED_ROUTES:
            key += (str(body.get("customer_id")),)
        allowed, remaining, reset = self._hit(key, rule, now)
        headers = {
            "RateLimit-Limit": str(rule.limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": f"{rule.limit};w={rule.window_seconds}",
        }
        if not allowed:
            raise _Refusal(
                Response(
                    429,
                    PLAIN_TEXT_429.encode(),
                    {"Content-Type": "text/plain; charset=utf-8", "Retry-After": str(reset), **headers},
                )
            )
        if route in contract.ORG_CAPPED_ROUTES:
            allowed, _, _ = self._hit((env, "org_cap"), contract.ORG_CAP, now)
            if not allowed:
                raise _Refusal(_error(429, "rate_limit_exceeded", "Rate limit exceeded.", env))
        return headers

    def _hit(self, key: tuple[Any, ...], rule: contract.RateLimit, now: float) -> tuple[bool, int, int]:
        """Count one request in a fixed window; (allowed, remaining, seconds to reset)."""
        start = math.floor(now / rule.window_seconds) * rule.window_seconds
        window_start, count = self._windows.get(key, (start, 0))
        if window_start != start:
            count = 0
        count += 1
        self._windows[key] = (start, count)
        reset = max(1, math.ceil(start + rule.window_seconds - now))
        return count <= rule.limit, max(0, rule.limit - count), reset

    def _check_idempotency(self, key: str | None, env: str) -> None:
        if not key:
            return
        now = self.clock()
        seen = self._idempotency.get((env, key))
        if seen is not None and now - seen < 24 * 3600:
            raise _Refusal(
                _error(
                    409,
                    "duplicate_idempotency_key",
                    f"A request with idempotency key {key} was already received",
                    env,
                )
            )
        self._idempotency[(env, key)] = now

    def _check_scopes(self, route: str, scopes: frozenset[str] | None, env: str) -> None:
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
            raise _Refusal(
                _error(403, "insufficient_scopes", f"Insufficient scopes. Missing: {', '.join(missing)}", env)
            )

    # --- handlers ---------------------------------------------------------------

    def _get_or_create(self, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
        v = _Validator(body, env)
        customer_id = v.required("customer_id", str, nullable=True, customer_id=True)
        name = v.optional("name", str, nullable=True)
        email = v.optional("email", str, nullable=True, email=True)
        fingerprint = v.optional("fingerprint", str, nullable=True)
        metadata = v.optional("metadata", dict)
        stripe_id = v.optional("stripe_id", str, nullable=True)
        create_in_stripe = v.optional("create_in_stripe", bool)
        plan_id = v.optional("auto_enable_plan_id", str)
        receipts = v.optional("send_email_receipts", bool)
        expand = v.expand()
        lookup_email = email if isinstance(email, str) else None
        if customer_id is None and not lookup_email:
            raise _Refusal(_error(400, "invalid_request", "Either customer ID or email is required", env))

        record = self._find(env, customer_id) if customer_id is not None else None
        if record is None and lookup_email:
            record = self._find_idless(env, lookup_email)
            if record is not None and customer_id is not None:
                self._set_id(env, record, customer_id)  # a call with an id claims the row
        if record is not None:
            for name_, value in (("name", name), ("email", email)):
                if value is not _MISSING and value and not record[name_]:
                    record[name_] = value
            if receipts is not _MISSING:
                record["send_email_receipts"] = receipts
            self._changed()
            return self._public(record, expand)

        if plan_id is not _MISSING and plan_id not in self.plans:
            raise _Refusal(_error(404, "product_not_found", f"Product {plan_id} not found", env))
        if stripe_id not in (_MISSING, None, ""):
            self._check_stripe_id(stripe_id, env)
        elif create_in_stripe is True:
            stripe_id = _random_id("cus_", 14)
        fields = {
            "name": name,
            "email": email,
            "fingerprint": fingerprint,
            "metadata": metadata,
            "stripe_id": stripe_id,
            "send_email_receipts": receipts,
        }
        record = self._new_record(env, customer_id, {k: v for k, v in fields.items() if v is not _MISSING})
        if plan_id is not _MISSING:
            self._attach(record, self.plans[plan_id], auto_enable=False)
        self._changed()
        return self._public(record, expand)

    def _get(self, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
        v = _Validator(body, env)
        customer_id = v.required("customer_id", str)
        expand = v.expand()
        return self._public(self._existing(env, customer_id), expand)

    def _list(self, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
        cursor_style = contract.uses_cursor_pagination(version)
        v = _Validator(body, env, limit_code="invalid_request" if cursor_style else "invalid_inputs")
        default_limit = contract.CURSOR_DEFAULT_LIMIT if cursor_style else contract.OFFSET_DEFAULT_LIMIT
        limit = v.integer("limit", default_limit, minimum=1, maximum=contract.MAX_LIST_LIMIT)
        search = v.optional("search", str)
        plans = v.optional("plans", list)
        status = v.optional("subscription_status", str, choices=("active", "scheduled"))
        matches = _matcher(
            search=search.strip().lower() if isinstance(search, str) else "",
            plans=v.plan_filters(plans),
            status=status if status is not _MISSING else None,
        )
        if not cursor_style:
            offset = v.integer("offset", 0, minimum=0)
            everyone = self._sorted(env, "desc")
            filtered = bool(search and search.strip()) or plans or status is not _MISSING
            found = [record for record in everyone if matches(record)] if filtered else everyone
            window = found[offset : offset + limit]
            return {
                "list": [self._public(record) for record in window],
                "total": len(window),
                "total_count": len(everyone),
                "total_filtered_count": len(found),
                "limit": limit,
                "offset": offset,
                "has_more": len(window) == limit,
            }
        cursor = v.optional("start_cursor", str)
        order = v.optional("sort_order", str, choices=("asc", "desc"))
        order = "desc" if order is _MISSING else order
        processors = v.optional("processors", list)
        created = v.optional("created_at_range", dict)
        after = _decode_cursor(cursor, env) if cursor not in (_MISSING, "") else None
        start = created.get("start") if created is not _MISSING else None
        end = created.get("end") if created is not _MISSING else None
        page: list[JSONDict] = []
        has_more = False
        for record in self._sorted(env, order):
            position = (record["created_at"], record["_seq"])
            if after is not None and (position >= after if order == "desc" else position <= after):
                continue
            if start is not None and record["created_at"] < start:
                continue
            if end is not None and record["created_at"] > end:
                continue
            if processors and not (_processors(record) & set(processors)):
                continue
            if not matches(record):
                continue
            if len(page) == limit:
                has_more = True
                break
            page.append(record)
        next_cursor = _encode_cursor(page[-1]) if has_more and page else None
        return {"list": [self._public(record) for record in page], "next_cursor": next_cursor}

    def _update(self, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
        v = _Validator(body, env)
        customer_id = v.required("customer_id", str)
        changes = {
            "name": v.optional("name", str, nullable=True),
            "email": v.optional("email", str, nullable=True, email=True),
            "fingerprint": v.optional("fingerprint", str, nullable=True),
        }
        metadata = v.optional("metadata", dict, nullable=True)
        stripe_id = v.optional("stripe_id", str, nullable=True)
        receipts = v.optional("send_email_receipts", bool)
        new_id = v.optional("new_customer_id", str, customer_id=True)
        record = self._existing(env, customer_id)
        if stripe_id not in (_MISSING, None, ""):
            self._check_stripe_id(stripe_id, env)
        if new_id is not _MISSING and new_id != record["id"]:
            if self._find(env, new_id) is not None:
                raise _Refusal(
                    _error(
                        409,
                        "customer_already_exists",
                        f"Customer with ID {new_id} already exists, can't change to this ID",
                        env,
                    )
                )
            self._set_id(env, record, new_id)
        for name, value in changes.items():
            if value is not _MISSING:
                if name == "email":
                    self._unindex_idless(env, record)
                record[name] = value or None
        self._index_idless(env, record)
        if metadata:
            for key, value in metadata.items():
                if value is None:
                    record["metadata"].pop(key, None)
                else:
                    record["metadata"][key] = value
        if stripe_id is not _MISSING:
            record["stripe_id"] = stripe_id or None
        if receipts is not _MISSING:
            record["send_email_receipts"] = receipts
        self._changed()
        return self._public(record)

    def _delete(self, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
        v = _Validator(body, env)
        customer_id = v.required("customer_id", str)
        v.optional("delete_in_stripe", bool)
        record = self._existing(env, customer_id)
        del self._records[env][record["internal_id"]]
        if record["id"] is not None:
            self._by_id[env].pop(record["id"], None)
        self._unindex_idless(env, record)
        self._changed(reordered=True)
        return {"success": True}

    # --- the store --------------------------------------------------------------

    def _find(self, env: str, customer_id: str) -> JSONDict | None:
        internal = self._by_id[env].get(customer_id)
        if internal is None and customer_id.startswith("cus_"):
            internal = customer_id  # Autumn also accepts its internal id
        return self._records[env].get(internal) if internal else None

    def _find_idless(self, env: str, email: str) -> JSONDict | None:
        internal = self._idless[env].get(email.lower())
        return self._records[env].get(internal) if internal else None

    def _index_idless(self, env: str, record: JSONDict) -> None:
        if record["id"] is None and record["email"]:
            self._idless[env].setdefault(record["email"].lower(), record["internal_id"])

    def _unindex_idless(self, env: str, record: JSONDict) -> None:
        if record["email"] and self._idless[env].get(record["email"].lower()) == record["internal_id"]:
            del self._idless[env][record["email"].lower()]

    def _set_id(self, env: str, record: JSONDict, customer_id: str) -> None:
        self._unindex_idless(env, record)
        if record["id"] is not None:
            self._by_id[env].pop(record["id"], None)
        record["id"] = customer_id
        self._by_id[env][customer_id] = record["internal_id"]

    def _existing(self, env: str, customer_id: str) -> JSONDict:
        record = self._find(env, customer_id)
        if record is None:
            raise _Refusal(_error(404, "customer_not_found", f"Customer {customer_id} not found", env))
        return record

    def _new_record(self, env: str, customer_id: str | None, fields: JSONDict) -> JSONDict:
        self._seq += 1
        record: JSONDict = {
            "internal_id": _random_id("cus_"),
            "_seq": self._seq,
            "id": customer_id,
            "name": fields.get("name") or None,
            "email": fields.get("email") or None,
            "fingerprint": fields.get("fingerprint") or None,
            "stripe_id": fields.get("stripe_id") or None,
            "created_at": int(fields.get("created_at") or self.clock() * 1000),
            "env": env,
            "metadata": dict(fields.get("metadata") or {}),
            "send_email_receipts": bool(fields.get("send_email_receipts", False)),
            "subscriptions": [],
            "purchases": [],
        }
        self._records[env][record["internal_id"]] = record
        if customer_id is not None:
            self._by_id[env][customer_id] = record["internal_id"]
        self._index_idless(env, record)
        self._changed(reordered=True)
        for plan in self.plans.values():
            if plan.default:
                self._attach(record, plan, auto_enable=True)
        return record

    def _attach(self, record: JSONDict, plan: Plan, *, auto_enable: bool) -> None:
        if any(sub["plan_id"] == plan.id for sub in record["subscriptions"]):
            return
        now = int(self.clock() * 1000)
        record["subscriptions"].append(
            {
                "id": _random_id("cus_prod_", 16),
                "plan_id": plan.id,
                "auto_enable": auto_enable,
                "add_on": plan.add_on,
                "status": "active",
                "past_due": False,
                "canceled_at": None,
                "expires_at": None,
                "trial_ends_at": None,
                "started_at": now,
                "current_period_start": None,
                "current_period_end": None,
                "quantity": 1,
                "scope": "customer",
            }
        )

    def _check_stripe_id(self, stripe_id: str, env: str) -> None:
        if not stripe_id.startswith("cus_") or len(stripe_id) < 8:
            raise _Refusal(
                _error(400, "stripe_error", f"(Stripe Error) No such customer: '{stripe_id}'", env)
            )

    def _sorted(self, env: str, order: str) -> list[JSONDict]:
        """The customers newest first (or oldest), cached until the next write
        so paging through a large store does not sort it on every page."""
        cached = self._sorted_cache.get(env)
        if cached is None or cached[0] != self._generation:
            ordered = sorted(
                self._records[env].values(),
                key=lambda record: (record["created_at"], record["_seq"]),
                reverse=True,
            )
            cached = (self._generation, ordered)
            self._sorted_cache[env] = cached
        return cached[1] if order == "desc" else cached[1][::-1]

    def _plan_object(self, plan_id: str, env: str) -> JSONDict:
        plan = self.plans.get(plan_id) or Plan(plan_id)
        return {
            "id": plan.id,
            "name": plan.name or plan.id,
            "group": None,
            "version": plan.version,
            "add_on": plan.add_on,
            "auto_enable": plan.default,
            "env": env,
            "archived": False,
            "items": [],
        }

    def _public(self, record: JSONDict, expand: Iterable[str] = ()) -> JSONDict:
        """The customer object of contract section 6, with every required key.

        It shares its lists and dicts with the store (it is serialized at
        once on the request path); what leaves for tests is ``_detached``.
        """
        customer = {
            "id": record["id"],
            "name": record["name"],
            "email": record["email"],
            "created_at": record["created_at"],
            "fingerprint": record["fingerprint"],
            "stripe_id": record["stripe_id"],
            "env": record["env"],
            "metadata": record["metadata"],
            "send_email_receipts": record["send_email_receipts"],
            "billing_controls": {},
            "subscriptions": record["subscriptions"],
            "purchases": record["purchases"],
            "licenses": [],
            "balances": {},
            "flags": {},
            "config": {},
        }
        if _processors(record):
            customer["processors"] = {"stripe": {"id": record["stripe_id"]}}
        for item in expand:
            if item in ("invoices", "trials_used", "entities", "referrals"):
                customer[item] = []
            elif item in ("rewards", "payment_method"):
                customer[item] = None
            elif item in ("subscriptions.plan", "purchases.plan"):
                key = item.split(".")[0]
                customer[key] = [
                    {**entry, "plan": self._plan_object(entry["plan_id"], record["env"])}
                    for entry in customer[key]
                ]
        return customer

    def _changed(self, *, reordered: bool = False) -> None:
        """Note a write: for the data file, and (when customers were added or
        removed) for the sorted listing cache."""
        if reordered:
            self._generation += 1
        self._dirty.set()

    # --- persistence ------------------------------------------------------------

    def save(self) -> None:
        """Write the customers to ``data_file`` now (atomically).

        The store is serialized a few hundred records at a time, taking the
        lock (and, in json's C encoder, the GIL) for each piece only, so a
        save of a large store never stalls the requests being served; a stall
        would release a burst of queued requests into one rate-limit window.
        """
        if not self._data_file:
            return
        self._dirty.clear()
        self._data_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._data_file.with_suffix(self._data_file.suffix + ".tmp")
        with temporary.open("w") as out:
            with self._lock:
                out.write(f'{{"format":1,"seq":{self._seq},"records":{{')
                environments = {env: list(records.values()) for env, records in self._records.items()}
            for number, (env, records) in enumerate(environments.items()):
                out.write(("," if number else "") + json.dumps(env) + ":[")
                for start in range(0, len(records), 200):
                    with self._lock:
                        piece = json.dumps(records[start : start + 200], separators=(",", ":"))
                    out.write(("," if start else "") + piece[1:-1])
                out.write("]")
            out.write("}}")
        temporary.replace(self._data_file)

    def close(self) -> None:
        """Stop the background saver, saving what is unsaved."""
        self._closed.set()
        if self._dirty.is_set():
            self.save()

    def _load(self) -> None:
        assert self._data_file is not None
        if not self._data_file.exists():
            return
        state = json.loads(self._data_file.read_text())
        self._seq = state.get("seq", 0)
        for env, records in state.get("records", {}).items():
            for record in records:
                self._records[env][record["internal_id"]] = record
                if record["id"] is not None:
                    self._by_id[env][record["id"]] = record["internal_id"]
                self._index_idless(env, record)

    def _flush_loop(self) -> None:
        # Writes are batched: saving after every request would make a bulk
        # sync of a million customers rewrite the file a million times. The
        # pause grows with the time a save takes, keeping saving under ~5% of
        # the time however large the store.
        pause = 0.25
        while not self._closed.wait(pause):
            if self._dirty.is_set():
                started = time.monotonic()
                self.save()
                pause = max(0.25, 20 * (time.monotonic() - started))


class _Missing:
    """A field absent from the request body (falsy, unlike a given value)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


class _Validator:
    """Reads request fields with zod's rules and wording: the first problem
    becomes a 400 whose message is ``<field>: <problem>``."""

    def __init__(self, body: JSONDict, env: str, *, limit_code: str = "invalid_inputs") -> None:
        self.body = body
        self.env = env
        self.limit_code = limit_code

    def fail(self, field: str, problem: str, code: str = "invalid_inputs") -> _Refusal:
        return _Refusal(_error(400, code, f"{field}: {problem}", self.env))

    def required(self, name: str, kind: type, **rules: Any) -> Any:
        if name not in self.body:
            expected = "string" if kind is str else kind.__name__
            raise self.fail(name, f"Invalid input: expected {expected}, received undefined")
        return self.optional(name, kind, **rules)

    def optional(
        self,
        name: str,
        kind: type,
        *,
        nullable: bool = False,
        customer_id: bool = False,
        email: bool = False,
        choices: tuple[str, ...] = (),
    ) -> Any:
        if name not in self.body:
            return _MISSING
        value = self.body[name]
        if value is None:
            if nullable:
                return None
            raise self.fail(name, f"Invalid input: expected {_type_name(kind)}, received null")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(
                name,
                f"Invalid input: expected {_type_name(kind)}, received {contract.json_type(value)}",
            )
        if customer_id:
            problem = contract.customer_id_problem(value)
            if problem:
                raise self.fail(name, problem)
        if email and isinstance(value, str) and value and not contract.is_valid_email(value):
            raise self.fail(name, "not a valid email address")
        if choices and value not in choices:
            options = "|".join(f'"{choice}"' for choice in choices)
            raise self.fail(name, f"Invalid option: expected one of {options}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.body.get(name, default)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, f"Invalid input: expected int, received {contract.json_type(value)}")
        if value < minimum:
            raise self.fail(name, f"Too small: expected number to be >={minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"Too big: expected number to be <={maximum}", self.limit_code)
        return value

    def expand(self) -> list[str]:
        value = self.optional("expand", list)
        if value is _MISSING:
            return []
        for item in value:
            if item not in contract.EXPAND_VALUES:
                options = "|".join(f'"{choice}"' for choice in contract.EXPAND_VALUES)
                raise self.fail("expand", f"Invalid option: expected one of {options}")
        return value

    def plan_filters(self, plans: Any) -> list[tuple[str, set[int] | None]]:
        if plans in (_MISSING, None):
            return []
        result = []
        for entry in plans:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self.fail("plans", "Invalid input: expected object with a string id")
            versions = entry.get("versions")
            result.append((entry["id"], set(versions) if isinstance(versions, list) else None))
        return result


def _detached(value: Any) -> Any:
    """A deep copy that shares nothing with the store (JSON values only)."""
    return json.loads(json.dumps(value))


def _processors(record: JSONDict) -> set[str]:
    """The payment processors a customer is linked to (only Stripe exists)."""
    return {"stripe"} if record["stripe_id"] else set()


def _type_name(kind: type) -> str:
    return {str: "string", bool: "boolean", int: "number", dict: "record", list: "array"}[kind]


def _matcher(
    *, search: str, plans: list[tuple[str, set[int] | None]], status: str | None
) -> Callable[[JSONDict], bool]:
    def matches(record: JSONDict) -> bool:
        if search and not any(search in (record[name] or "").lower() for name in ("id", "name", "email")):
            return False
        subscriptions = record["subscriptions"]
        if plans and not any(
            sub["plan_id"] == plan_id and (versions is None or 1 in versions)
            for sub in subscriptions
            for plan_id, versions in plans
        ):
            return False
        if status and not any(sub["status"] == status for sub in subscriptions):
            return False
        return True

    return matches


def _encode_cursor(record: JSONDict) -> str:
    raw = json.dumps({"c": record["created_at"], "s": record["_seq"]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, env: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return int(data["c"]), int(data["s"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _Refusal(_error(400, "invalid_cursor", "cursor is not valid base64url", env)) from None


def _parse_body(body: bytes) -> JSONDict:
    """Autumn reads an unparsable or empty body as ``{}`` (then fails validation)."""
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(payload, separators=(",", ":")).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, code: str, message: str, env: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else {}
    return _json_response(status, {"message": message, "code": code, "env": env}, headers)


_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _failure(
    status: int,
    code: str | None = None,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An injected failure that looks like the real one for that status: the
    plain-text 429 of the limiter, the HTML page of a proxy's 502, Autumn's
    JSON for the rest."""
    extra = dict(headers or {})
    if code is None and message is None:
        if status == 429:
            return Response(
                429,
                PLAIN_TEXT_429.encode(),
                {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "1", **extra},
            )
        if status == 502:
            return Response(502, _BAD_GATEWAY_PAGE, {"Content-Type": "text/html", **extra})
        if status == 503:
            code, message = (
                "service_unavailable",
                ("Service is temporarily unavailable, please retry shortly."),
            )
        else:
            code, message = "internal_error", "Internal server error"
    response = _error(status, code or "internal_error", message or "Injected failure", "sandbox")
    response.headers.update(extra)
    return response
