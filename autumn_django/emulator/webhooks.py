"""Autumn's webhooks, as Svix delivers them: signed, retried, recorded.

Autumn sends its events through Svix: a POST of ``{"type": ..., "data":
{...}}`` with the headers ``svix-id`` (``msg_...``, the same on every retry
of one message), ``svix-timestamp`` (epoch seconds of the attempt) and
``svix-signature`` (``v1,<base64>``: HMAC-SHA256 of ``"{id}.{timestamp}.
{body}"`` keyed with the base64-decoded secret after ``whsec_``). They are
Standard Webhooks' ``webhook-*`` headers renamed, so the signature is made
by the ``standardwebhooks`` package, and a receiver verifies with
``Webhook(secret).verify(body, headers)`` once the names are mapped back.

:class:`Webhooks` is the sender. Each endpoint gets each message once, then
again after every answer that is not 2xx (or a connection error), on Svix's
schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) divided by
1000 unless told otherwise. Attempts run on a background thread, so the
request that caused an event is never held up by its delivery; an endpoint
with its own ``transport`` (Django's test client, say) can be
``synchronous`` instead, delivered in the caller's thread. Every attempt is
recorded as a :class:`Delivery`. Nothing here knows the customers.

Contract notes: choices made where Svix's behaviour is ours to pick.

* Requests go to the endpoint's URL only: redirects are not followed (a 3xx
  is a failed attempt, as at Svix) and no proxy from the environment is used.
* A synchronous endpoint's retries wait for :meth:`Webhooks.retry_now`,
  which makes each waiting message's next attempt at once: a test decides
  when, whatever the schedule.
* A replayed message keeps its ``svix-id`` and body; it is signed again
  with a new timestamp and its attempts count from 1 again.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from .store import random_id
from .wire import JSONDict

#: Svix's retry schedule: the wait before each attempt, in seconds.
SVIX_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
#: The emulator's default: Svix's schedule divided by 1000 (0, 5 ms, 300 ms,
#: 1.8 s, 7.2 s, 18 s, 36 s, 36 s).
COMPRESSED_SCHEDULE: tuple[float, ...] = tuple(wait / 1000 for wait in SVIX_SCHEDULE)
SECRET_PREFIX = "whsec_"
USER_AGENT = "Svix-Webhooks/1.0 (autumn-django emulator)"

#: How an attempt is made: ``(url, headers, body) -> HTTP status``; raising
#: counts as a connection error.
Transport = Callable[[str, Mapping[str, str], bytes], int]


def make_webhook_secret() -> str:
    """A random signing secret as Svix writes them: ``whsec_`` + base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signer(secret: str) -> Webhook:
    """The ``standardwebhooks`` signer of a ``whsec_...`` secret; ValueError
    when the secret is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("A webhook secret is whsec_ followed by base64 (see make_webhook_secret())")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("A webhook secret is whsec_ followed by base64: this one does not decode") from None
    if not key:
        raise ValueError("A webhook secret may not be empty")
    return Webhook(secret)


def svix_headers(signer: Webhook, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers Svix sends with one attempt."""
    signature = signer.sign(message_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "svix-id": message_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature,
    }


def standard_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Svix's ``svix-*`` headers renamed to Standard Webhooks' ``webhook-*``,
    as ``standardwebhooks.Webhook.verify`` reads them."""
    return {
        ("webhook-" + name.lower().removeprefix("svix-") if name.lower().startswith("svix-") else name): value
        for name, value in headers.items()
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is the answer: Svix does not follow it either


def http_transport(timeout: float = 5.0) -> Transport:
    """POST over HTTP(S) to exactly the URL given: no redirects, no proxies."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def send(url: str, headers: Mapping[str, str], body: bytes) -> int:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(64 * 1024)
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)

    return send


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL; give a transport to deliver elsewhere")


@dataclass(frozen=True)
class Message:
    """One event as sent: ``svix-id`` is ``id``; ``body`` the exact JSON."""

    id: str
    type: str
    data: JSONDict
    body: str
    env: str
    created_at: float


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a message to an endpoint: its ``status``, or the
    ``error`` when no answer came. ``headers`` are those sent (``svix-*``)."""

    message_id: str
    type: str
    url: str
    attempt: int
    status: int | None
    error: str | None
    at: float
    headers: Mapping[str, str] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(eq=False)
class Endpoint:
    """Where events go: ``url``, signed with ``secret``; only the events of
    ``env`` when it is set."""

    url: str
    secret: str
    transport: Transport
    synchronous: bool = False
    env: str | None = None
    signer: Webhook = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.signer = signer(self.secret)


@dataclass(eq=False)
class _Job:
    message: Message
    endpoint: Endpoint
    attempt: int  # the number of the next attempt, from 1


class Webhooks:
    """The endpoints, the messages sent to them and every attempt made.

    ``schedule`` is the wait before each attempt (its length the number of
    attempts); ``clock`` gives ``svix-timestamp`` and ``Delivery.at`` (the
    real time by default: receivers check the timestamp against theirs).
    """

    def __init__(
        self,
        *,
        schedule: Sequence[float] = COMPRESSED_SCHEDULE,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not schedule or any(wait < 0 for wait in schedule):
            raise ValueError("A retry schedule is one or more waits of 0 seconds or more")
        self.schedule = tuple(float(wait) for wait in schedule)
        self.timeout = timeout
        self.clock = clock
        self.endpoints: list[Endpoint] = []
        self._messages: dict[str, Message] = {}
        self._deliveries: list[Delivery] = []
        self._queue: list[tuple[float, int, _Job]] = []  # (due, seq, job) by time.monotonic()
        self._waiting: list[_Job] = []  # synchronous endpoints' retries, for retry_now()
        self._busy = 0  # jobs queued or being attempted on the thread
        self._seq = itertools.count()
        self._generation = 0  # bumped by clear(): attempts of before are not recorded
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- configuration --------------------------------------------------------

    def add(
        self,
        url: str,
        secret: str,
        *,
        transport: Transport | None = None,
        synchronous: bool | None = None,
        env: str | None = None,
    ) -> Endpoint:
        """Send every later event to ``url``, signed with ``secret``.

        Without ``transport`` the URL must be http(s) and attempts are made
        on the sender's thread; with one (``(url, headers, body) ->
        status``), attempts are made in the thread that caused the event
        unless ``synchronous=False``.
        """
        if transport is None:
            check_url(url)
        elif not url:
            raise ValueError("A webhook endpoint needs a URL (or a path, for its transport)")
        endpoint = Endpoint(
            url,
            secret,
            transport or http_transport(self.timeout),
            transport is not None if synchronous is None else synchronous,
            env,
        )
        with self._changed:
            self.endpoints.append(endpoint)
        return endpoint

    # --- sending ----------------------------------------------------------------

    def publish(self, event_type: str, data: JSONDict, env: str = "sandbox") -> Message:
        """Send a new message to every endpoint (of ``env``)."""
        payload = {"type": event_type, "data": data}
        message = Message(
            random_id("msg_", 27),
            event_type,
            json.loads(json.dumps(data)),
            json.dumps(payload, separators=(",", ":")),
            env,
            self.clock(),
        )
        with self._changed:
            self._messages[message.id] = message
        self._send(message)
        return message

    def replay(self, message_id: str) -> Message:
        """Send a stored message again: the same ``svix-id`` and body, signed
        anew, to every endpoint (of its ``env``), attempts counted from 1."""
        with self._changed:
            message = self._messages.get(message_id)
        if message is None:
            raise KeyError(f"No message {message_id!r} was sent")
        self._send(message)
        return message

    def _send(self, message: Message) -> None:
        inline: list[_Job] = []
        with self._changed:
            endpoints = [e for e in self.endpoints if e.env in (None, message.env)]
            for endpoint in endpoints:
                job = _Job(message, endpoint, 1)
                if endpoint.synchronous:
                    inline.append(job)
                else:
                    self._enqueue(job, self.schedule[0])
        for job in inline:
            if self.schedule[0]:
                time.sleep(self.schedule[0])
            self._attempt(job)

    def retry_now(self) -> list[Delivery]:
        """Make the next attempt of every message waiting to be retried on a
        synchronous endpoint, now and in this thread; the attempts made."""
        with self._changed:
            jobs, self._waiting = self._waiting, []
        return [delivery for job in jobs if (delivery := self._attempt(job)) is not None]

    def _enqueue(self, job: _Job, wait: float) -> None:
        """Queue an attempt (the caller holds ``_changed``)."""
        if self._closed:
            return
        heapq.heappush(self._queue, (time.monotonic() + wait, next(self._seq), job))
        self._busy += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="autumn-emulator-webhooks", daemon=True)
            self._thread.start()
        self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._changed.wait(self._queue[0][0] - time.monotonic() if self._queue else None)
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._queue)
            try:
                self._attempt(job)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def _attempt(self, job: _Job) -> Delivery | None:
        """Make one attempt, record it, and schedule the next on failure."""
        with self._changed:
            generation = self._generation
        endpoint, message = job.endpoint, job.message
        headers = svix_headers(endpoint.signer, message.id, int(self.clock()), message.body)
        status: int | None = None
        error: str | None = None
        try:
            status = int(endpoint.transport(endpoint.url, dict(headers), message.body.encode()))
        except Exception as problem:  # a connection error, a timeout, a view that raised
            error = f"{type(problem).__name__}: {problem}"
        delivery = Delivery(
            message.id, message.type, endpoint.url, job.attempt, status, error, self.clock(), headers
        )
        with self._changed:
            if generation != self._generation:
                return None  # cleared while in flight
            self._deliveries.append(delivery)
            if not delivery.ok and job.attempt < len(self.schedule):
                retry = _Job(message, endpoint, job.attempt + 1)
                if endpoint.synchronous:
                    self._waiting.append(retry)
                else:
                    self._enqueue(retry, self.schedule[job.attempt])
            self._changed.notify_all()
        return delivery

    # --- inspection (for tests) -----------------------------------------------

    @property
    def messages(self) -> list[Message]:
        with self._changed:
            return list(self._messages.values())

    def message(self, message_id: str) -> Message | None:
        with self._changed:
            return self._messages.get(message_id)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every attempt so far, in the order made."""
        with self._changed:
            return list(self._deliveries)

    @property
    def pending(self) -> int:
        """Attempts queued or in flight on the sender's thread, plus retries
        waiting for :meth:`retry_now`."""
        with self._changed:
            return self._busy + len(self._waiting)

    def wait_for(self, count: int | None = None, timeout: float = 5.0) -> list[Delivery]:
        """Block until ``count`` attempts have been recorded (None: until the
        sender's thread has nothing left to do: every message delivered or
        given up); the attempts so far. TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (len(self._deliveries) >= count if count is not None else self._busy == 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    made = [(d.type, d.attempt, d.status, d.error) for d in self._deliveries]
                    wanted = f"{count} deliveries" if count is not None else "the sender to be idle"
                    raise TimeoutError(
                        f"Waited {timeout} s for {wanted}; {self._busy} attempts pending; made: {made}"
                    )
                self._changed.wait(left)
            return list(self._deliveries)

    # --- lifecycle ----------------------------------------------------------------

    def clear(self) -> None:
        """Forget messages, attempts and every retry due (the endpoints stay)."""
        with self._changed:
            self._generation += 1
            self._messages.clear()
            self._deliveries.clear()
            self._busy -= len(self._queue)
            self._queue.clear()
            self._waiting.clear()
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the sender's thread; attempts not yet made are dropped."""
        with self._changed:
            self._closed = True
            self._busy -= len(self._queue)
            self._queue.clear()
            self._changed.notify_all()
