"""Faults the emulator injects, which Autumn does not have on purpose.

Latency with jitter (so requests overtake each other as on a real network),
a random failure rate, scripted failures and dropped connections, and
scripted delays: what tests and benchmarks need to exercise a client's
timeouts, retries and ordering. Injected failures look like the real ones
(see :func:`~.wire.failure_response`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .. import contract
from .billing import ROUTES as BILLING_ROUTES
from .wire import Response, failure_response


@dataclass
class _Scripted:
    route: str | None  # None: any route
    remaining: int


@dataclass
class _ScriptedFailure(_Scripted):
    status: int
    code: str | None
    message: str | None
    headers: dict[str, str]
    drop: bool


@dataclass
class _ScriptedDelay(_Scripted):
    seconds: float


class Hold:
    """One request held before Autumn sees it, until the test releases it:
    a request stuck on the network for exactly as long as a test needs, so
    a race is played out in a fixed order rather than by timing."""

    def __init__(self, route: str | None, timeout: float) -> None:
        self.route = route
        self.timeout = timeout
        self.arrived = threading.Event()
        self._released = threading.Event()

    def wait(self, timeout: float = 10.0) -> Hold:
        """Block until the held request has arrived; raises if it does not."""
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no request to {self.route or 'any route'} arrived within {timeout} s")
        return self

    def release(self) -> None:
        """Let the held request through to Autumn."""
        self._released.set()

    def _hold(self) -> None:
        self.arrived.set()
        self._released.wait(self.timeout)


@dataclass
class _ScriptedHold(_Scripted):
    hold: Hold


_S = TypeVar("_S", bound=_Scripted)


class Faults:
    """The emulator's fault state: its random source and what is scripted.

    The knobs (``latency_ms``, ``fail_rate`` and so on) stay on the emulator,
    where tests set them, and are passed in on each request.
    """

    def __init__(self, lock: threading.RLock, seed: int | None = None) -> None:
        self._lock = lock
        self._random = random.Random(seed)
        self._failures: list[_ScriptedFailure] = []
        self._delays: list[_ScriptedDelay] = []
        self._holds: list[_ScriptedHold] = []

    def fail_next(
        self,
        count: int,
        route: str | None,
        *,
        status: int,
        code: str | None,
        message: str | None,
        headers: Mapping[str, str] | None,
        drop: bool,
    ) -> None:
        _check_route(route)
        with self._lock:
            self._failures.append(
                _ScriptedFailure(route, count, status, code, message, dict(headers or {}), drop)
            )

    def delay_next(self, count: int, route: str | None, *, seconds: float) -> None:
        _check_route(route)
        with self._lock:
            self._delays.append(_ScriptedDelay(route, count, seconds))

    def hold_next(self, route: str | None, *, timeout: float) -> Hold:
        _check_route(route)
        hold = Hold(route, timeout)
        with self._lock:
            self._holds.append(_ScriptedHold(route, 1, hold))
        return hold

    def clear(self) -> None:
        """Forget what is scripted, letting any held request go."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            for scripted in self._holds:
                scripted.hold.release()
            self._holds.clear()

    def latency(self, latency_ms: float, jitter_ms: float) -> float:
        """Seconds this request spends on the wire (both ways together)."""
        if not latency_ms and not jitter_ms:
            return 0.0
        with self._lock:
            jitter = self._random.uniform(-jitter_ms, jitter_ms)
        return max(0.0, latency_ms + jitter) / 1000

    def held(self, route: str) -> float:
        """Seconds a scripted delay holds this request before Autumn sees it."""
        with self._lock:
            delay = _take(self._delays, route)
        return float(delay.seconds) if delay is not None else 0.0

    def hold(self, route: str) -> None:
        """Hold this request if a test asked to (:meth:`hold_next`)."""
        with self._lock:
            scripted = _take(self._holds, route)
        if scripted is not None:
            scripted.hold._hold()

    def injected_failure(
        self, route: str, fail_rate: float, fail_status: int | Iterable[int]
    ) -> Response | None:
        """The scripted failure due for ``route``, else one at ``fail_rate``."""
        with self._lock:
            failure = _take(self._failures, route)
            if failure is not None:
                if failure.drop:
                    return Response(0, drop=True)
                return failure_response(failure.status, failure.code, failure.message, failure.headers)
            if fail_rate and self._random.random() < fail_rate:
                statuses = [fail_status] if isinstance(fail_status, int) else list(fail_status)
                return failure_response(self._random.choice(statuses))
        return None


def _take(script: list[_S], route: str) -> _S | None:
    """Use up one turn of the first entry due for ``route``, dropping spent ones."""
    for entry in script:
        if entry.route in (None, route) and entry.remaining > 0:
            entry.remaining -= 1
            script[:] = [other for other in script if other.remaining > 0]
            return entry
    return None


def _check_route(route: str | None) -> None:
    routes = (*contract.ROUTES, *BILLING_ROUTES)
    if route is not None and route not in routes:
        raise ValueError(f"Unknown route {route!r}; one of {', '.join(routes)}")
