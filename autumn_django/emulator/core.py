"""The emulator: Autumn's customers API as a function of a request.

:meth:`Emulator.handle` takes a method, path, headers and body and returns the
response Autumn would give, so the HTTP server and the in-process ``responses``
transport are two thin shells over one behaviour. Everything a client can see
follows Autumn's customers API contract; the fault injection (latency, error
rates, scripted failures, dropped connections) is ours, for tests and
benchmarks.

:class:`Emulator` is the facade over the parts, each in its own module:
``wire`` (responses and error bodies), ``store`` (the customers and their data
file), ``validation`` (zod's rules and wording), ``access`` (key, version,
rate limits, idempotency, scopes), ``routes`` (the five handlers) and
``faults`` (what we inject), with ``billing`` (plans attached, canceled and
expired) and ``webhooks`` (the events those send, signed and retried as
Svix does). Where the contract is silent, each part's docstring notes the
choice made.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import contract
from . import access, billing, routes
from .access import IdempotencyKeys, Keys, RateLimiter
from .billing import BillingError
from .faults import Faults, Hold
from .store import Plan, Store, detached
from .webhooks import COMPRESSED_SCHEDULE, Delivery, Endpoint, Message, Transport, Webhooks
from .wire import PLAIN_TEXT_429, JSONDict, LoggedRequest, Refusal, Response, parse_body

__all__ = [
    "PLAIN_TEXT_429",
    "BillingError",
    "Delivery",
    "Emulator",
    "Endpoint",
    "JSONDict",
    "LoggedRequest",
    "Message",
    "Plan",
    "Response",
]


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

    ``webhook_url`` (with ``webhook_secret``, ``whsec_...``) receives the
    events that billing changes send, signed as Svix signs them and retried
    on ``webhook_schedule`` (the wait before each attempt, in seconds;
    Svix's divided by 1000 by default); :meth:`add_webhook` adds more.
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
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_schedule: Sequence[float] = COMPRESSED_SCHEDULE,
        webhook_timeout: float = 5.0,
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
        self._lock = threading.RLock()
        self._keys = Keys(self._lock, secret_keys)
        self._faults = Faults(self._lock, seed)
        self._limiter = RateLimiter(self._now)
        self._idempotency = IdempotencyKeys(self._now)
        self.log: deque[LoggedRequest] = deque(maxlen=log_size)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()  # "route status" -> answers, e.g. "customers.update 429"
        self._store = Store(clock=self._now, lock=self._lock, data_file=data_file)
        for plan in plans:
            self.add_plan(plan)
        for plan_id in default_plans:
            self.add_plan(Plan(plan_id, default=True))
        #: The webhook sender: endpoints, messages, every delivery attempt.
        self.webhooks = Webhooks(schedule=webhook_schedule, timeout=webhook_timeout)
        if webhook_url is not None or webhook_secret is not None:
            if not webhook_url or not webhook_secret:
                raise ValueError("webhook_url and webhook_secret go together (see make_webhook_secret())")
            self.add_webhook(webhook_url, webhook_secret)

    def _now(self) -> float:
        return self.clock()  # read on each call, so a clock set later is used

    @property
    def plans(self) -> dict[str, Plan]:
        """The plans that exist, by id."""
        return self._store.plans

    # --- configuration --------------------------------------------------------

    def add_key(self, key: str, scopes: Iterable[str] | None = None) -> None:
        """Accept ``key`` (and, once any key is added, only the keys added)."""
        self._keys.add(key, scopes)

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
        self._faults.fail_next(
            count, route, status=status, code=code, message=message, headers=headers, drop=drop
        )

    def delay_next(self, count: int = 1, route: str | None = None, *, ms: float) -> None:
        """Hold the next ``count`` calls to ``route`` (any when None) for ``ms``
        before Autumn sees them: a request stuck on the network, which a later
        request can overtake."""
        self._faults.delay_next(count, route, seconds=ms / 1000)

    def hold_next(self, route: str | None = None, *, timeout: float = 30.0) -> Hold:
        """Hold the next call to ``route`` (any when None) before Autumn sees
        it, until the returned :class:`~.faults.Hold` is released (or
        ``timeout`` seconds pass): ``hold.wait()`` blocks until the request
        has arrived. Races between requests play out in the order a test
        chooses, whatever the machine's speed."""
        return self._faults.hold_next(route, timeout=timeout)

    def add_webhook(
        self,
        url: str,
        secret: str,
        *,
        transport: Transport | None = None,
        synchronous: bool | None = None,
        env: str | None = None,
    ) -> Endpoint:
        """Send every later event to ``url`` (only those of ``env`` when
        given), signed with ``secret`` (``whsec_`` + base64).

        By default the URL must be http(s) and events go out from a
        background thread. A ``transport`` (``(url, headers, body) ->
        status``, e.g. :func:`autumn_django.testing.django_transport`)
        delivers them instead, in the thread that caused the event unless
        ``synchronous=False``.
        """
        return self.webhooks.add(url, secret, transport=transport, synchronous=synchronous, env=env)

    def reset(self) -> None:
        """Forget customers, requests, counters, windows, scripted failures,
        webhook messages and deliveries (plans and endpoints stay)."""
        self.webhooks.clear()
        with self._lock:
            self._store.clear()
            self._limiter.clear()
            self._idempotency.clear()
            self._faults.clear()
            self.log.clear()
            self.counts.clear()
            self.statuses.clear()

    # --- inspection (for tests) -----------------------------------------------

    def customers(self, env: str = "sandbox") -> list[JSONDict]:
        """Every customer of ``env``, newest first, as the API shows them."""
        with self._lock:
            return detached([self._store.public(record) for record in self._store.ordered(env, "desc")])

    def customer(self, customer_id: str, env: str = "sandbox") -> JSONDict | None:
        with self._lock:
            record = self._store.find(env, customer_id)
            return detached(self._store.public(record)) if record else None

    def internal_id(self, customer_id: str, env: str = "sandbox") -> str | None:
        """Autumn's own id (``cus_...``) of the customer ``customer_id`` of
        ``env``, or None when there is no such customer. The routes accept it
        wherever they take a customer id, as Autumn's do."""
        with self._lock:
            record = self._store.find(env, customer_id)
            return record["internal_id"] if record else None

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
                "customers": self._store.counts(),
            }

    def add_customer(self, env: str = "sandbox", **fields: Any) -> JSONDict:
        """Put a customer straight into the store, as if made elsewhere
        (another app, Autumn's dashboard). ``created_at`` may be given, and
        ``plans``: plan ids (added if unknown) it holds active subscriptions to."""
        with self._lock:
            plan_ids = fields.pop("plans", ())
            record = self._store.new_record(env, fields.pop("id", None), fields)
            for plan_id in plan_ids:
                self._store.attach(
                    record, self.plans.get(plan_id) or self.add_plan(plan_id), auto_enable=False
                )
            self._store.changed()
            return detached(self._store.public(record))

    # --- billing and its events -------------------------------------------------

    def attach(self, customer_id: str, plan_id: str, env: str = "sandbox") -> JSONDict:
        """Attach a plan to a customer, active at once, as ``billing.attach``
        does; the customer. Sends ``billing.updated`` (``activated``) and
        ``customer.products.updated`` (``new``). :class:`BillingError` (404
        ``customer_not_found``/``product_not_found``, 409
        ``plan_already_attached``) as the route would answer."""
        return self._billing(billing.attach, env, customer_id, plan_id)

    def cancel(
        self, customer_id: str, plan_id: str, *, immediately: bool = False, env: str = "sandbox"
    ) -> JSONDict:
        """Cancel a customer's subscription: active until the end of its
        period (``billing.updated`` ``updated``), or ``immediately`` expired
        (``expired``); the customer. 404 ``cus_product_not_found`` when the
        customer does not hold the plan."""
        return self._billing(billing.cancel, env, customer_id, plan_id, immediately=immediately)

    def expire(self, customer_id: str, plan_id: str, env: str = "sandbox") -> JSONDict:
        """End a customer's subscription (or one-off purchase) now: ``status:
        "expired"``, ``billing.updated`` ``expired``; the customer."""
        return self._billing(billing.expire, env, customer_id, plan_id)

    def _billing(self, operation: Callable[..., JSONDict], *args: Any, **kwargs: Any) -> JSONDict:
        with self._lock:
            try:
                customer = detached(self._store.public(operation(self._store, *args, **kwargs)))
            finally:
                events = self._store.take_events()
        self._publish(events)
        return customer

    def _publish(self, events: list[tuple[str, str, JSONDict]]) -> None:
        for env, event_type, data in events:
            self.webhooks.publish(event_type, data, env)

    def send_event(self, event_type: str, data: JSONDict, env: str = "sandbox") -> Message:
        """Send any event (``{"type": event_type, "data": data}``) to the
        endpoints, as a new message; the message (``.id`` is its svix-id)."""
        return self.webhooks.publish(event_type, data, env)

    def replay(self, message_id: str) -> Message:
        """Send a message again, as Svix's resend does: the same ``svix-id``
        and body, a new timestamp and signature (to test a receiver's dedupe)."""
        return self.webhooks.replay(message_id)

    @property
    def messages(self) -> list[Message]:
        """Every webhook message sent (not each attempt), oldest first."""
        return self.webhooks.messages

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook delivery attempt: message id, type, url, attempt,
        status or error, time."""
        return self.webhooks.deliveries

    def wait_for_deliveries(self, count: int | None = None, timeout: float = 5.0) -> list[Delivery]:
        """Wait until ``count`` delivery attempts have been made (None: until
        no attempt is due on the sender's thread); every attempt so far.
        TimeoutError after ``timeout`` seconds."""
        return self.webhooks.wait_for(count, timeout)

    def retry_webhooks(self) -> list[Delivery]:
        """Make now, in this thread, the next attempt of each message a
        synchronous endpoint (an in-process transport) failed to take."""
        return self.webhooks.retry_now()

    def use_up_rate_limit(
        self,
        limit: str,
        env: str = "sandbox",
        *,
        customer_id: str | None = None,
        api_version: str | None = None,
    ) -> None:
        """Count the current window of one of Autumn's rate limits as full, so
        the next request it covers is answered 429 (with ``rate_limits`` on).

        ``limit`` is a route, or ``"org_cap"`` for the org-wide cap that
        customers.get_or_create and customers.get share; those two routes are
        limited per customer, named by ``customer_id``. The limit of
        customers.list depends on ``api_version`` (default:
        ``default_api_version``).
        """
        version = contract.parse_api_version(api_version or self.default_api_version)
        if version is None:
            raise ValueError(f"{api_version!r} is not an Autumn API version")
        with self._lock:
            self._limiter.use_up(limit, env, version, customer_id)

    # --- the request path -----------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request exactly as Autumn would (plus any faults set up).

        The pipeline: the network delay, the body, the route, any injected
        failure, then Autumn's checks in its order (key, version, rate
        limits, idempotency, scopes), the route's handler, and the log.
        """
        delay = self._faults.latency(self.latency_ms, self.latency_jitter_ms)
        held = self._faults.held(routes.route_name(path))
        if delay or held:
            time.sleep(delay / 2 + held)
        self._faults.hold(routes.route_name(path))
        lower = {name.lower(): value for name, value in headers.items()}
        route = routes.resolve(path)
        env: str | None = None
        version_text: str | None = None
        events: list[tuple[str, str, JSONDict]] = []
        try:
            parsed = parse_body(body)
            if route is None or method.upper() != "POST":
                raise Refusal(routes.unknown_route(method, path))
            injected = self._faults.injected_failure(route, self.fail_rate, self.fail_status)
            if injected is not None:
                raise Refusal(injected)
            env, scopes = self._keys.authenticate(lower.get("authorization"))
            version_text = lower.get("x-api-version") or self.default_api_version
            version = access.api_version(version_text, env)
            with self._lock:
                try:
                    limit_headers = (
                        self._limiter.check(route, version, env, parsed) if self.rate_limits else {}
                    )
                    self._idempotency.check(lower.get("idempotency-key"), env)
                    access.check_scopes(route, scopes, env)
                    response = routes.dispatch(self._store, route, version, env, parsed)
                    response.headers.update(limit_headers)
                finally:
                    events = self._store.take_events()
        except Refusal as refusal:
            response = refusal.response
        self._record(method, path, route, response, env, version_text, lower, body)
        self._publish(events)  # queued for the sender's thread (or delivered, by an in-process transport)
        if delay:
            time.sleep(delay / 2)
        return response

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
        except (ValueError, RecursionError):
            decoded = body.decode("utf-8", "replace")
        kept = {name: value for name, value in headers.items() if name != "authorization"}
        entry = LoggedRequest(
            self.clock(), method.upper(), path, route, response.status, env, version, kept, decoded
        )
        with self._lock:
            self.log.append(entry)
            self.counts[route or "unknown"] += 1
            self.statuses[f"{route or 'unknown'} {response.status}"] += 1

    # --- persistence ------------------------------------------------------------

    def save(self) -> None:
        """Write the customers to ``data_file`` now (atomically), a few hundred
        at a time so a save of a large store never stalls the requests."""
        self._store.save()

    def close(self) -> None:
        """Stop the background saver, saving what is unsaved, and the webhook
        sender (attempts not yet made are dropped)."""
        self.webhooks.close()
        self._store.close()
