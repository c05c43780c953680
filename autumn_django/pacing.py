"""Pacing calls to Autumn: one budget per route, kept under Autumn's limits.

Autumn counts calls per organisation in fixed one-second windows per route
(25 a second for ``customers.update``, about 4,000 for ``get_or_create``...).
A site that runs several processes (web processes, task workers,
``autumn_sync`` runs) must share one budget, or each paces itself to the
whole limit and together they meet 429s.

* :class:`LocalPacer` paces the threads of one process: calls are spread
  evenly (``1 / rate`` apart), so every one-second window, however it falls,
  holds at most the rate (plus one).
* :class:`SharedPacer` paces every process that reaches one Redis
  (``AUTUMN["RATE_LIMIT_STORE"]``), with the Generic Cell Rate Algorithm of
  `pyrate-limiter <https://pyratelimiter.readthedocs.io>`_ kept in Redis: the
  same even spacing, across processes and machines. A 429 seen by any
  process pauses that route for all of them until its ``Retry-After`` has
  passed. When Redis cannot be reached, each process falls back to its own
  :class:`LocalPacer` and says so in the log (once a minute); a save never
  fails for it.

Inside a database transaction (a call made in ``ATOMIC_REQUESTS``, say) a
call waits at most :data:`IN_TRANSACTION_WAIT` for its slot, holding the
transaction's locks no longer; past it, and past ``max_wait`` anywhere, it
raises :class:`~autumn_django.exceptions.NoCallSlot` without sending,
which the sync engine records as a retryable failure.

``get_or_create`` and ``get`` count against one cap of the organisation
at Autumn (240,000 a minute together), so they share one budget here too
(:func:`budget_of`) while their rates are the same, as by default.

Contract note: Autumn's published limits are per organisation; the budget
is scoped by a hash of the secret key unless ``RATE_LIMIT_SCOPE`` names the
organisation (to share one budget between keys of one organisation).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from django.db import connections

from . import conf, contract
from .exceptions import NoCallSlot

try:  # the "shared-pacing" extra: pip install 'autumn-django[shared-pacing]'
    import redis
    from pyrate_limiter import GCRA, Rate, RedisStateStore
except ImportError:  # pragma: no cover - checked by autumn_django.E001 when the store is set
    redis = None  # type: ignore[assignment]

logger = logging.getLogger("autumn_django.pacing")

__all__ = ["LocalPacer", "Pacer", "SharedPacer", "in_transaction"]


class Pacer(Protocol):
    def wait(self, route: str, *, max_wait: float | None = None) -> float | None:
        """Return when ``route`` may be called; raise RateLimited if that
        would take longer than ``max_wait`` seconds, or would mean sleeping
        inside a database transaction."""

    def pause(self, route: str, seconds: float) -> None:
        """Autumn answered 429: call ``route`` again only after ``seconds``."""


def in_transaction() -> bool:
    """A database transaction is open in this thread: do not sleep in it."""
    return any(connection.in_atomic_block for connection in connections.all(initialized_only=True))


#: The longest a call waits for its slot inside a database transaction
#: (holding its locks); a longer wait is refused as retryable instead.
IN_TRANSACTION_WAIT = 0.25


def _allowed_wait(max_wait: float | None, may_sleep: Callable[[], bool]) -> tuple[float | None, str]:
    """How long a call may wait, and what to say when that is too short."""
    if not may_sleep():
        limit = IN_TRANSACTION_WAIT if max_wait is None else min(max_wait, IN_TRANSACTION_WAIT)
        return limit, "in a database transaction, which must not wait long"
    return max_wait, "more than the wait allowed"


def _refuse(route: str, wait: float, why: str) -> NoCallSlot:
    return NoCallSlot(
        None,
        "no_call_slot",
        f"{route}: no call slot for {wait:.1f} s ({why}); nothing was sent, left for a retry.",
        retry_after=max(wait, 0.1),
        operation=route,
    )


#: The name of the budget ``get_or_create`` and ``get`` share.
ORG_CAP_BUDGET = "org-cap"


def budget_of(route: str, limits: Mapping[str, float | None]) -> str:
    """What a call to ``route`` counts against at Autumn: the route's own
    limit, or for ``get_or_create`` and ``get`` the one cap of the
    organisation they share (240,000 a minute for both together), while
    ``limits`` gives them one rate (as by default). A site that sets one of
    them apart (``RATE_LIMITS``) paces each by its own rate: one budget
    spaced by two rates would let the slower hold up the faster."""
    capped = contract.ORG_CAPPED_ROUTES
    if route in capped and len({limits.get(each) for each in capped}) == 1:
        return ORG_CAP_BUDGET
    return route


class LocalPacer:
    """Paces calls per route to at most ``limits[route]`` a second, spread
    evenly, across all threads of one process; a route not in ``limits`` is
    not paced. Spreading (rather than bursting up to the limit) keeps every
    one of Autumn's fixed one-second windows under the limit. Routes that
    share a limit at Autumn (:func:`budget_of`) share their spacing and
    their pauses."""

    def __init__(
        self,
        limits: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        may_sleep: Callable[[], bool] = lambda: not in_transaction(),
    ) -> None:
        self.limits = {route: rate for route, rate in limits.items() if rate}
        self._next: dict[str, float] = {}
        self._paused: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep, self._may_sleep = clock, sleep, may_sleep

    def wait(self, route: str, *, max_wait: float | None = None) -> float:
        """Wait for ``route``'s next slot; returns the slot's time on the clock.
        A pause that comes while waiting is waited out too."""
        rate = self.limits.get(route)
        key = budget_of(route, self.limits)
        spent, limit = 0.0, None  # the wait allowed in all, read at the first wait
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._paused.get(key, now))
                if rate:
                    slot = max(slot, self._next.get(key, now))
                wait = slot - now
                if wait > 0:
                    if limit is None:
                        limit = _allowed_wait(max_wait, self._may_sleep)
                    allowed, why = limit
                    if allowed is not None and spent + wait > allowed:
                        raise _refuse(route, spent + wait, why)
                if rate:
                    self._next[key] = slot + 1 / rate
            if wait > 0:
                self._sleep(wait)
                spent += wait
            with self._lock:
                if self._paused.get(key, -math.inf) <= self._clock():
                    return slot

    def pause(self, route: str, seconds: float) -> None:
        key = budget_of(route, self.limits)
        with self._lock:
            until = self._clock() + seconds
            self._paused[key] = max(self._paused.get(key, 0.0), until)


#: A high limit (4,000 a second) needs a burst, as a slot is decided per
#: millisecond: at least this share of a second's calls.
BURST_SECONDS = 0.005


def burst(rate: float, ceiling: float | None = None) -> int:
    """How many calls the shared budget lets through at once.

    Spaced ``1 / rate`` apart with a burst of ``b``, a one-second window
    holds at most ``b - 1 + ceil(rate)`` calls. A burst of one would keep it
    at the rate, but then every call that comes late for its slot (a wake up
    after the slot, a round trip to Redis) loses that time for good, and
    four processes sharing 22.5 a second deliver 22 (measured). So the burst
    takes the room the budget leaves under Autumn's own limit (``ceiling``),
    less one call for the network's jitter, and no more than a tenth of the
    budget's own second (a site that lowers a rate to leave room for another
    of its organisation's apps keeps that room): 2 for updates (22.5 of 25:
    at most 24 calls in any window), 1 for lists (4.5 of 5) and for any rate
    under 20 a second."""
    room = math.floor(ceiling) - math.ceil(rate) if ceiling else 1
    return max(1, math.floor(rate * BURST_SECONDS), min(room, math.floor(rate / 10)))


#: How long a process keeps to its own pacing after Redis failed it.
REDIS_RETRY_AFTER = 30.0
#: How often the fall back is logged, at most.
WARN_EVERY = 60.0


class SharedPacer:
    """Paces every process that shares one Redis (see the module's text).

    ``limits`` are calls a second per route; ``scope`` keeps organisations
    (or test runs) apart in Redis; ``ceilings`` are Autumn's own limits per
    route, which the budget's bursts stay under (see :func:`burst`).
    Connection and read timeouts are short: a slow Redis must not stall the
    site's saves. The slots are kept on the wall clock (milliseconds since
    the epoch), so machines sharing one budget need their clocks in step
    (NTP keeps them within a few milliseconds)."""

    def __init__(
        self,
        url: str,
        limits: Mapping[str, float],
        *,
        scope: str,
        ceilings: Mapping[str, float] | None = None,
        fallback: LocalPacer | None = None,
        may_sleep: Callable[[], bool] = lambda: not in_transaction(),
    ) -> None:
        if redis is None:
            raise ImportError("AUTUMN['RATE_LIMIT_STORE'] needs: pip install 'autumn-django[shared-pacing]'")
        self.limits = {route: rate for route, rate in limits.items() if rate}
        self.scope = scope
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        self._redis_errors = (redis.RedisError, OSError)
        self._fallback = fallback or LocalPacer(limits, may_sleep=may_sleep)
        self._may_sleep = may_sleep
        self._buckets: dict[str, tuple[Any, list[Any], threading.Lock]] = {}
        self._lines: dict[str, threading.Lock] = {}  # one per budget
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._ceilings = dict(ceilings or {})
        self._gcra = GCRA()

    def key(self, route: str, kind: str = "slots") -> str:
        """The Redis key of ``route``'s budget (:func:`budget_of`)."""
        return f"autumn:pacing:{self.scope}:{kind}:{budget_of(route, self.limits)}"

    def wait(self, route: str, *, max_wait: float | None = None) -> None:
        if time.monotonic() < self._down_until:
            self._fallback.wait(route, max_wait=max_wait)
            return
        try:
            self._wait_shared(route, max_wait)
        except self._redis_errors as error:
            self._fall_back(error)
            self._fallback.wait(route, max_wait=max_wait)

    def _wait_shared(self, route: str, max_wait: float | None) -> None:
        allowed, why = _allowed_wait(max_wait, self._may_sleep)
        started = time.monotonic()
        rate = self.limits.get(route)
        while True:
            self._sit_out_pause(route, allowed, started)
            if not rate:
                return
            # A 429 may have come while this call waited for its slot: then
            # the slot is given up, and the call waits out the pause first.
            if not self._take_slot(route, rate, allowed, started, why) or not self._paused_for(route):
                return

    def _take_slot(self, route: str, rate: float, allowed: float | None, started: float, why: str) -> bool:
        """Ask Redis for a slot until one is free; True if that took a wait.

        Each refusal says when the next slot falls due, so a waiting call
        asks again then, on a fresh clock: not pyrate-limiter's blocking
        wait, which moves a waiting call's time on by what it slept rather
        than reading the clock, so that a process that waits loses every slot
        to one just back from a call (measured: three of four workers starved
        for a minute). A small random delay on top spreads the processes
        woken for one slot."""
        store, rates, line = self._bucket(route, rate)
        # The threads of one process wait in line here, so that one of them,
        # not each, asks Redis when a slot falls due.
        waited = not line.acquire(blocking=False)  # waiting in line is waiting too
        patience = -1.0 if allowed is None else max(0.0, allowed - (time.monotonic() - started))
        if waited and not line.acquire(timeout=patience):
            raise _refuse(route, time.monotonic() - started, why)
        try:
            while True:
                decision = store.check(self._gcra, rates, time.time_ns() // 1_000_000, 1)
                if decision.allowed:
                    return waited
                due = (decision.retry_after_ms or 1) / 1000 + random.uniform(0, 0.001)
                left = None if allowed is None else allowed - (time.monotonic() - started)
                if left is not None and due > left:
                    raise _refuse(route, time.monotonic() - started + due, why)
                time.sleep(due)
                waited = True
        finally:
            line.release()

    def _paused_for(self, route: str) -> float:
        left = self._redis.pttl(self.key(route, "pause"))
        return left / 1000 if isinstance(left, int) and left > 0 else 0.0

    def _sit_out_pause(self, route: str, allowed: float | None, started: float) -> None:
        wait = self._paused_for(route)
        if wait <= 0:
            return
        if allowed is not None and time.monotonic() - started + wait > allowed:
            raise _refuse(route, wait, "Autumn answered 429 and asked every process to wait")
        time.sleep(wait)

    def _bucket(self, route: str, rate: float) -> tuple[Any, list[Any], threading.Lock]:
        """pyrate-limiter's GCRA state for ``route`` in Redis, its rate, and
        the line this process's threads wait in for it."""
        bucket = self._buckets.get(route)
        if bucket is None:
            with self._lock:
                bucket = self._buckets.get(route)
                if bucket is None:
                    # Integer rates: calls per 100 s, so 22.5 a second is exact.
                    most = burst(rate, self._ceilings.get(route))
                    limit = Rate(max(1, round(rate * 100)), 100_000, burst=most)
                    store = RedisStateStore(self._redis, self.key(route))
                    line = self._lines.setdefault(budget_of(route, self.limits), threading.Lock())
                    bucket = self._buckets[route] = (store, [limit], line)
        return bucket

    def pause(self, route: str, seconds: float) -> None:
        """Every process waits ``seconds`` before calling ``route`` again."""
        self._fallback.pause(route, seconds)
        if time.monotonic() < self._down_until:
            return
        try:
            key, ms = self.key(route, "pause"), max(1, math.ceil(seconds * 1000))
            # Made if absent, else made longer, never shorter: another
            # process may have set a longer pause (PEXPIRE GT, Redis 7).
            with self._redis.pipeline() as pipe:
                pipe.set(key, "1", px=ms, nx=True)
                pipe.pexpire(key, ms, gt=True)
                pipe.execute(raise_on_error=False)
        except self._redis_errors as error:
            self._fall_back(error)

    def _fall_back(self, error: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + REDIS_RETRY_AFTER
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "The shared Autumn rate budget (AUTUMN['RATE_LIMIT_STORE']) cannot be reached "
                "(%s); this process paces itself alone for %.0f s. Other processes may then "
                "exceed Autumn's limits together.",
                type(error).__name__,
                REDIS_RETRY_AFTER,
            )


def scope_of(secret_key: str, scope: str | None = None) -> str:
    """The budget's name in Redis: the organisation's, when the site names
    it, else a hash of the key (never the key itself)."""
    return scope or hashlib.sha256(secret_key.encode()).hexdigest()[:16]


_pacers: dict[tuple[Any, ...], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(settings: conf.AutumnSettings, *, share: int = 1) -> Pacer | None:
    """The process's pacer for these settings (None when ``RATE_LIMITS`` is
    False): one per budget, shared by every client of the process (the
    tasks', the admin's, ``autumn_sync``'s), so that they pace together.

    ``share``: this process is one of that many of one ``autumn_sync``
    started together: alone, or when Redis cannot be reached, it paces
    itself to its share of the budget, so that together they keep to it."""
    if settings.rate_limits is None:
        return None
    scope = scope_of(settings.secret_key, settings.rate_limit_scope)
    limits = settings.rate_limits
    key = (scope, settings.rate_limit_store, settings.api_version, tuple(sorted(limits.items())), share)
    pacer = _pacers.get(key)
    if pacer is None:
        with _pacers_lock:
            pacer = _pacers.get(key)
            if pacer is None:
                store = settings.rate_limit_store
                alone = LocalPacer({route: rate / share for route, rate in limits.items() if rate})
                pacer = _pacers[key] = (
                    SharedPacer(
                        store,
                        limits,
                        scope=scope,
                        ceilings=conf.autumn_limits(settings.api_version),
                        fallback=alone,
                    )
                    if store
                    else alone
                )
    return pacer
