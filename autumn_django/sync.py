"""The sync rules: bring a mirror row, and Autumn, to what the user says.

One module, used by the signal handlers (through the task), by
``manage.py autumn_sync`` and by the admin's actions; there is no second copy.

Two halves. :func:`mark_changed` and :func:`mark_deleted` run inside the
user's transaction: they write the mirror row (``pending`` or ``deleting``)
and make no request, so a change is recorded even when Autumn is down, and
a rolled-back change leaves nothing behind. :func:`sync` runs later, in a task
or a command, and talks to Autumn.

Concurrency: no lock is held across a request to Autumn, because a user's
save would have to wait for it. Every local change bumps the row's
``version``, and a sync records its result only if the version is still the
one it read (``UPDATE ... WHERE version = v``). When it is not, the push may
have carried stale data and may have landed after a newer one, so the sync
pushes again, in full, from the latest data. Every push is followed by such a
check, so the last push to land at Autumn always carries the newest data.

Deletes race pushes still on the wire, and a delete must win over every push
that started before it, however late that push lands:

* ``pushed_at`` says since when a push may be on its way: a change sets it
  when it marks the row pending (no extra query), a push that starts more
  than :data:`PUSH_MARK_FRESH` later sets it again before it sends, and a
  recorded answer clears it (a failed push keeps it: a timed-out request
  may still land);
* a pusher that made or renamed a customer and then finds its row deleting,
  gone or removed deletes what it made (:func:`_compensate`), unless a live
  row holds that id; if Autumn is down it leaves a ``gone`` row to do it;
* a delete confirmed while a push may still land (``pushed_at`` within
  :data:`PUSH_GRACE`) keeps the row as a ``gone`` tombstone, and deletes
  once more when no push can land any longer: that covers a pusher killed
  with its request on the wire, which no process is left to notice;
* a new user whose customer id a deleting or gone row still holds takes
  that row over (:func:`take_over`) rather than failing on the unique id.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from . import conf, contract, mapping
from .client import AutumnClient, get_client
from .exceptions import AutumnError, Conflict, MappingError, MirrorWriteError, NotFound, message_text
from .mapping import Payload
from .models import Customer
from .signals import customer_sync_failed, customer_synced

logger = logging.getLogger("autumn_django.sync")


class _Word(str, Enum):
    """A word of the engine's vocabulary: compares, hashes, formats and
    serialises as its value, so logs and ``--json`` read ``created``."""

    def __str__(self) -> str:
        return str(self.value)


class Action(_Word):
    """What a sync did to one customer."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    FAILED = "failed"
    SKIPPED = "skipped"  # no row, or nothing to push for it (unlinked and kept)
    KEPT = "kept"  # the user no longer qualifies and DELETE_POLICY is "keep"


class Step(_Word):
    """What one row and user call for, decided before any request."""

    PUSH = "push"
    DELETE = "delete"
    RETIRE = "retire"  # the user stopped qualifying: mark the row deleting first
    INVALID = "invalid"  # the mapping gives what Autumn refuses: fail the row, send nothing
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    KEPT = "kept"


#: The steps that need no request; each ends as the action of the same name.
IDLE_STEPS = (Step.UNCHANGED, Step.SKIPPED, Step.KEPT)

#: How often one sync starts over because the user changed while it ran.
MAX_ROUNDS = 5

#: How long after a push started it may still land at Autumn: the client's
#: timeouts and retries, with room to spare. A delete confirmed sooner than
#: this after a push started is confirmed again once it has passed.
PUSH_GRACE = timedelta(minutes=5)
#: A ``pushed_at`` this recent needs no fresh write before a push: the
#: tombstone it may cause still outlasts the push by PUSH_GRACE less this.
PUSH_MARK_FRESH = timedelta(minutes=1)


@dataclass
class SyncResult:
    """What one sync did."""

    action: Action
    customer_pk: int
    customer_id: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    calls: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "customer_pk": self.customer_pk,
            "customer_id": self.customer_id,
            "error": self.error,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
            "calls": self.calls,
        }


class _Stale(Exception):
    """The row changed while we worked: start over from the latest data."""


@contextmanager
def errors_logged(message: str, *args: Any) -> Iterator[None]:
    """Log an unexpected error in the block instead of raising it, unless the
    site asked for errors (``RAISE_ERRORS``): a user's save and the enqueueing
    after its commit must not fail because of Autumn or of us."""
    try:
        yield
    except Exception:
        if conf.raise_errors():
            raise
        logger.exception(message, *args)


# --- inside the user's transaction -------------------------------------------


def mark_changed(user: Any, using: str = "default") -> Customer | None:
    """Record that ``user``'s customer must be brought up to date.

    Returns the row when a sync is due (the caller enqueues it after commit),
    ``None`` when nothing is to be done. Costs one query when the payload is
    what Autumn already holds (a ``last_login`` save), and no request.
    """
    row = _row_of(user, using)
    env = mapping.current_env()
    try:
        payload = mapping.payload_for(user) if mapping.should_sync(user) else None
    except MappingError as error:
        record_mapping_error(user, row, str(error), env, using)
        return None
    if payload is None:  # the user does not qualify (SHOULD_SYNC)
        if row is None or conf.load().delete_policy == "keep" or row.state == Customer.State.DELETING:
            return None
        return _bump(row, Customer.State.DELETING, using)
    if row is not None and row.holds(payload, env):
        return None
    if row is not None:
        return _bump(row, Customer.State.PENDING, using)
    try:
        with _savepoint(using):
            return Customer.objects.using(using).create(
                user=user,
                env=env,
                customer_id=payload.customer_id,
                state=Customer.State.PENDING,
                pushed_at=timezone.now(),
            )
    except IntegrityError:
        taken = take_over(user, env, payload.customer_id, using)
        if taken is None:
            record_mapping_error(user, None, duplicate_message(payload.customer_id), env, using)
        return taken


def mark_deleted(user: Any, using: str = "default") -> Customer | None:
    """Record, before ``user`` is deleted, that its customer must go too.

    The row outlives the user (its link is set to NULL) until Autumn has
    confirmed the delete. With ``DELETE_POLICY = "keep"`` nothing changes.
    """
    if conf.load().delete_policy == "keep":
        return None
    row = _row_of(user, using)
    if row is None or row.state == Customer.State.DELETING:
        return None
    return _bump(row, Customer.State.DELETING, using)


def take_over(user: Any, env: str, customer_id: str, using: str = "default") -> Customer | None:
    """Give ``user`` the row of a deleted user that maps to the same customer
    id and is still deleting or a tombstone (a user re-created with the same
    primary key, or a ``CUSTOMER_ID`` built from a reused email). The row
    becomes pending, so the delete in flight, if any, finds it changed and
    pushes instead. Returns the row, or None if no such row holds the id."""
    holder = (
        Customer.objects.using(using)
        .filter(
            env=env,
            customer_id=customer_id,
            user__isnull=True,
            state__in=[Customer.State.DELETING, Customer.State.GONE],
        )
        .only("pk")
        .first()
    )
    if holder is None:
        return None
    now = timezone.now()
    Customer.objects.using(using).filter(pk=holder.pk).update(
        user=user,
        state=Customer.State.PENDING,
        version=F("version") + 1,
        next_attempt_at=None,
        attempts=0,
        last_error="",
        updated=now,
        pushed_at=now,
    )
    return holder


def _row_of(user: Any, using: str) -> Customer | None:
    """The user's mirror row, with only the columns the rules read here: this
    runs on every save of every user (every login), where decoding the
    JSON columns and ordering cost more than the lookup itself."""
    rows = Customer.objects.using(using).only(*Customer.HOLDS_FIELDS).filter(user_id=user.pk)
    return next(iter(rows.order_by()[:1]), None)


def _bump(row: Customer, state: str, using: str) -> Customer:
    now = timezone.now()
    pushing = {"pushed_at": now} if state == Customer.State.PENDING else {}
    Customer.objects.using(using).filter(pk=row.pk).update(
        state=state, version=F("version") + 1, next_attempt_at=None, updated=now, **pushing
    )
    return row


def record_mapping_error(user: Any, row: Customer | None, message: str, env: str, using: str) -> None:
    """A mapping Autumn would refuse: a failed row with the message, nothing sent."""
    logger.error("Not syncing user %s: %s", user.pk, message)
    if row is not None:
        Customer.objects.using(using).filter(pk=row.pk).update(
            state=Customer.State.FAILED,
            last_error=message_text(message),
            next_attempt_at=None,
            version=F("version") + 1,
            updated=timezone.now(),
        )
        return
    try:
        with _savepoint(using):
            # The row needs some id; the refused one is recorded for the admin to see.
            Customer.objects.using(using).create(
                user=user,
                env=env,
                customer_id=f"invalid:{user.pk}"[:255],
                state=Customer.State.FAILED,
                last_error=message_text(message),
            )
    except IntegrityError:
        pass


# --- later: talking to Autumn --------------------------------------------------


@dataclass
class Decision:
    """What one row and user call for (:class:`Step`), decided without a
    query or a request, with what the step needs."""

    step: Step
    row: Customer | None
    user: Any = None
    payload: Payload | None = None
    known: bool = False
    error: Exception | None = None


@dataclass
class Outcome:
    """What the requests for one decision did (no database work is done here)."""

    action: Action
    remote: dict[str, Any] | None = None
    error: Exception | None = None
    calls: list[str] = field(default_factory=list)


def decide(row: Customer | None, user: Any, env: str, *, force: bool = False) -> Decision:
    """Decide what bringing ``row`` (None for a user never mirrored) and
    ``user`` to the desired state takes. Pure: the rules, no I/O."""
    if row is not None and row.state == Customer.State.DELETING:
        return Decision(Step.DELETE, row, user)
    if row is not None and row.state == Customer.State.GONE:
        due = row.next_attempt_at is None or row.next_attempt_at <= timezone.now()
        return Decision(Step.DELETE if due else Step.SKIPPED, row, user)
    if user is None:  # unlinked and kept ("keep" policy): nothing to push
        return Decision(Step.SKIPPED, row)
    try:
        payload = mapping.payload_for(user) if mapping.should_sync(user) else None
    except MappingError as error:
        return Decision(Step.INVALID, row, user, error=error)
    if payload is None:  # the user does not qualify (SHOULD_SYNC)
        if row is None:
            return Decision(Step.SKIPPED, row, user)
        return Decision(Step.KEPT if conf.load().delete_policy == "keep" else Step.RETIRE, row, user)
    known = row is not None and row.is_known_remotely and row.env == env
    if not force and row is not None and row.holds(payload, env):
        return Decision(Step.UNCHANGED, row, user, payload, known)
    return Decision(Step.PUSH, row, user, payload, known)


def execute(decision: Decision, client: AutumnClient, *, force: bool = False) -> Outcome:
    """Make the requests a push or delete decision calls for. Thread-safe; it
    touches no database, so a pool of threads can run many at once."""
    calls: list[str] = []
    try:
        if decision.step == Step.DELETE:
            assert decision.row is not None
            _delete_remote(client, decision.row.customer_id, calls)
            return Outcome(Action.DELETED, calls=calls)
        assert decision.payload is not None
        remote, action = _send(client, decision.row, decision.payload, decision.known, force, calls)
        return Outcome(action, remote, calls=calls)
    except AutumnError as error:
        return Outcome(Action.FAILED, error=error, calls=calls)


# --- what Autumn holds, read outside a push -----------------------------------


def refreshed_values(customer: dict[str, Any]) -> dict[str, Any]:
    """The row's columns for Autumn's answer read outside a push (a refresh,
    a link, a pull). The payload hash is cleared: Autumn may no longer hold
    what was last pushed, so the next sync compares the user's data with
    this answer afresh."""
    return {**Customer.remote_columns(customer), "payload_hash": ""}


def store_remote(row_pk: int, customer: dict[str, Any]) -> None:
    """Keep what Autumn holds for a row, read outside a sync."""
    Customer.objects.filter(pk=row_pk).update(**refreshed_values(customer), updated=timezone.now())


def refresh(row: Customer, client: AutumnClient | None = None) -> dict[str, Any]:
    """Read ``row``'s customer from Autumn now and keep it on the row;
    returns Autumn's answer. Raises the client's :class:`AutumnError`."""
    remote = (client or get_client()).get_customer(row.customer_id)
    store_remote(row.pk, remote)
    return remote


def link(user: Any, customer: dict[str, Any]) -> tuple[Customer, bool]:
    """Mirror an existing Autumn customer as ``user``'s row (made elsewhere,
    or the row was lost); returns the row and whether it is new."""
    return Customer.objects.update_or_create(
        user=user, defaults={**refreshed_values(customer), "state": Customer.State.SYNCED}
    )


def synced_values(remote: dict[str, Any], payload: Payload) -> dict[str, Any]:
    """The row's columns once Autumn has confirmed ``payload``."""
    return {
        **Customer.remote_columns(remote),
        "state": Customer.State.SYNCED,
        "payload_hash": payload.hash,
        "last_error": "",
        "attempts": 0,
        "next_attempt_at": None,
    }


def failure_values(row: Customer, error: Exception) -> dict[str, Any]:
    """The row's columns after a failed attempt: still to do, and why not."""
    retryable = getattr(error, "retryable", False)
    attempts = row.attempts + 1
    return {
        "state": Customer.State.DELETING if row.state == Customer.State.DELETING else Customer.State.FAILED,
        "last_error": message_text(error),
        "attempts": attempts,
        "next_attempt_at": timezone.now() + retry_delay(attempts, error) if retryable else None,
    }


def sync(
    customer_pk: int,
    *,
    client: AutumnClient | None = None,
    force: bool = False,
    made: str | None = None,
) -> SyncResult:
    """Bring one mirror row and its Autumn customer to the desired state:
    push a pending or failed row, delete a deleting one. ``force`` pushes
    every field even when the row says Autumn has them. ``made`` is a
    customer id an earlier push for this row made or renamed to (the bulk
    engine's), to be removed if the row turns out deleted meanwhile."""
    with _one_at_a_time(customer_pk):
        return _sync(customer_pk, client or get_client(), force, made)


def _sync(customer_pk: int, client: AutumnClient, force: bool, made: str | None) -> SyncResult:
    env = mapping.current_env()
    calls: list[str] = []
    for _ in range(MAX_ROUNDS):
        row = Customer.objects.select_related("user").filter(pk=customer_pk).first()
        if made is not None and _abandoned(row, made):
            _compensate(client, env, made, calls)
            made = None
        if row is None:
            return SyncResult(Action.SKIPPED, customer_pk, calls=calls)
        forced = force or bool(calls)
        decision = decide(row, row.user, env, force=forced)
        try:
            if decision.step == Step.RETIRE:
                _require_version(row, state=Customer.State.DELETING, version=F("version") + 1)
                raise _Stale
            if decision.step in IDLE_STEPS:
                return SyncResult(Action(decision.step.value), row.pk, row.customer_id, calls=calls)
            if decision.step == Step.INVALID:
                assert decision.error is not None
                return _fail(row, decision.error, calls)
            if decision.step == Step.PUSH and not freshly_marked(row):
                row.pushed_at = timezone.now()
                _require_version(row, pushed_at=row.pushed_at)
            outcome = execute(decision, client, force=forced)
            calls.extend(outcome.calls)
            made = made_by(decision, outcome) or made
            return _record(row, decision, outcome, calls)
        except _Stale:
            continue
    logger.warning(
        "Customer row %s changed %d times during one sync; left for the next.", customer_pk, MAX_ROUNDS
    )
    return SyncResult(Action.SKIPPED, customer_pk, calls=calls, error="changed during sync")


def _record(row: Customer, decision: Decision, outcome: Outcome, calls: list[str]) -> SyncResult:
    """Write one outcome on its row, if the row is as it was read."""
    if outcome.error is not None:
        return _fail(row, outcome.error, calls)
    if outcome.action == Action.DELETED:
        tombstone = tombstone_values(row)
        if tombstone is None:
            deleted, _ = Customer.objects.filter(pk=row.pk, version=row.version).delete()
            if not deleted:
                raise _Stale  # the user came back or changed meanwhile
        else:
            _require_version(row, **tombstone)
        if row.state != Customer.State.GONE:  # the first delete, not its confirmation
            customer_synced.send(sender=Customer, customer=row, action=Action.DELETED)
        retry_at = tombstone["next_attempt_at"] if tombstone else None
        return SyncResult(Action.DELETED, row.pk, row.customer_id, retry_at=retry_at, calls=calls)
    assert outcome.remote is not None and decision.payload is not None
    values = synced_values(outcome.remote, decision.payload)
    try:
        with _savepoint(Customer.objects.db):
            _require_version(row, **values, pushed_at=_landed(row.pushed_at))
    except (IntegrityError, DataError) as error:
        return _fail(row, write_error(error, values["customer_id"]), calls)
    for name, value in values.items():
        setattr(row, name, value)
    row.pushed_at = None
    customer_synced.send(sender=Customer, customer=row, action=outcome.action)
    return SyncResult(outcome.action, row.pk, row.customer_id, calls=calls)


def freshly_marked(row: Customer) -> bool:
    """The row's ``pushed_at`` is recent enough to stand for this push."""
    return row.pushed_at is not None and row.pushed_at > timezone.now() - PUSH_MARK_FRESH


def _landed(pushed_at: datetime | None) -> Any:
    """``pushed_at`` once the push that set it has landed: cleared, unless
    another push (a second task for the row) started since, which may
    still be on its way."""
    if pushed_at is None:
        return F("pushed_at")
    return Case(When(pushed_at=pushed_at, then=Value(None)), default=F("pushed_at"))


def made_by(decision: Decision, outcome: Outcome) -> str | None:
    """The customer id a push made at Autumn (a get_or_create, or a rename
    to a new id), which a delete that overtook it would not have removed."""
    if decision.step != Step.PUSH or outcome.error is not None or decision.payload is None:
        return None
    renamed = decision.row is not None and decision.row.customer_id != decision.payload.customer_id
    return decision.payload.customer_id if outcome.action == Action.CREATED or renamed else None


def tombstone_values(row: Customer) -> dict[str, Any] | None:
    """After Autumn confirmed a delete: None to remove the row, or its
    columns as a ``gone`` tombstone while a push that started before the
    delete may still land (to be deleted once more when it can no longer)."""
    if row.state == Customer.State.GONE or row.pushed_at is None:
        return None
    until = row.pushed_at + PUSH_GRACE
    if until <= timezone.now():
        return None
    return {"state": Customer.State.GONE, "next_attempt_at": until, "attempts": 0, "last_error": ""}


def _abandoned(row: Customer | None, made: str) -> bool:
    """The row that a push made ``made`` for no longer wants it."""
    return (
        row is None
        or row.state == Customer.State.GONE
        or (row.state == Customer.State.DELETING and row.customer_id != made)
    )


def _compensate(client: AutumnClient, env: str, customer_id: str, calls: list[str]) -> None:
    """Delete a customer a push made after the delete that should have won
    over it, unless a live row holds that id (a user re-created meanwhile
    with the same id). If Autumn cannot be reached, a ``gone`` row is left
    so the outbox deletes it later: it is never forgotten."""
    live = (
        Customer.objects.filter(env=env, customer_id=customer_id)
        .exclude(state__in=[Customer.State.DELETING, Customer.State.GONE])
        .exists()
    )
    if live:
        return
    try:
        _delete_remote(client, customer_id, calls)
    except AutumnError as error:
        logger.warning("Could not remove Autumn customer %r, made after its delete: %s", customer_id, error)
        retry_at = timezone.now() + retry_delay(1, error)
        _, created = Customer.objects.get_or_create(
            env=env,
            customer_id=customer_id,
            defaults={
                "state": Customer.State.GONE,
                "next_attempt_at": retry_at,
                "last_error": message_text(error),
            },
        )
        if not created:
            Customer.objects.filter(env=env, customer_id=customer_id, state=Customer.State.GONE).update(
                next_attempt_at=retry_at, last_error=message_text(error)
            )


def write_error(error: DatabaseError, customer_id: str) -> AutumnError:
    """Why the mirror could not store a row, as the error recorded on it:
    a customer id another row holds, or a value the columns cannot hold."""
    if isinstance(error, IntegrityError):
        return MappingError(duplicate_message(customer_id))
    return MirrorWriteError(
        f"The mirror could not store Autumn's answer for customer {customer_id!r} "
        f"({type(error).__name__}: {message_text(error, 300)})."
    )


def duplicate_message(customer_id: str) -> str:
    return (
        f"Autumn customer {customer_id!r} is already mirrored by another row; "
        "two users map to one customer id. Check AUTUMN['CUSTOMER_ID']."
    )


def _send(
    client: AutumnClient, row: Customer | None, payload: Payload, known: bool, force: bool, calls: list[str]
) -> tuple[dict[str, Any], Action]:
    """The requests for one push; returns Autumn's customer and the action."""
    if known and row is not None:
        rename = payload.customer_id != row.customer_id
        changes = dict(payload.fields) if force else differences(payload.fields, row.data or {})
        if not changes and not rename:
            return row.data or {}, Action.UNCHANGED  # no call: Autumn already holds it
        if rename:
            changes["new_customer_id"] = payload.customer_id
        try:
            calls.append(contract.UPDATE)
            return client.update_customer(row.customer_id, **changes), Action.UPDATED
        except NotFound:
            pass  # deleted at Autumn, or an earlier rename landed unseen: create it again
        except Conflict as error:
            raise Conflict(
                error.status,
                error.code,
                f"Cannot rename Autumn customer {row.customer_id!r} to {payload.customer_id!r}: "
                f"Autumn already has a customer with that id ({error.message}). Merge or delete one "
                "of them in Autumn, or change AUTUMN['CUSTOMER_ID'].",
                env=error.env,
                body=error.body,
                operation=error.operation,
            ) from None
    calls.append(contract.GET_OR_CREATE)
    remote = client.get_or_create_customer(
        payload.customer_id, **payload.fields, **mapping.get_or_create_options()
    )
    # For an existing customer Autumn ignores metadata and fingerprint and
    # keeps a non-empty name or email: follow up with what it did not take.
    stale = differences(payload.fields, remote)
    if stale:
        calls.append(contract.UPDATE)
        remote = client.update_customer(payload.customer_id, **stale)
    return remote, Action.CREATED


def differences(desired: dict[str, Any], remote: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``desired`` that ``remote`` does not hold yet. Metadata is
    compared key by key (Autumn merges it); keys set elsewhere are left alone."""
    changes: dict[str, Any] = {}
    for name, value in desired.items():
        if name == "metadata":
            held = remote.get("metadata") or {}
            wanted = {}
            for key, item in (value or {}).items():
                # None asks Autumn to drop the key: only worth sending if it is there.
                if (key in held) if item is None else (held.get(key) != item):
                    wanted[key] = item
            if wanted:
                changes["metadata"] = wanted
        elif remote.get(name) != value:
            changes[name] = value
    return changes


def _delete_remote(client: AutumnClient, customer_id: str, calls: list[str]) -> None:
    try:
        calls.append(contract.DELETE)
        client.delete_customer(customer_id, delete_in_stripe=conf.load().delete_in_stripe)
    except NotFound:
        pass  # already gone (Autumn's delete is not idempotent): done


def _fail(row: Customer, error: Exception, calls: list[str]) -> SyncResult:
    """Record a failed attempt on the row, keeping what it still has to do."""
    values = failure_values(row, error)
    _require_version(row, **values)
    for name, value in values.items():
        setattr(row, name, value)
    report_failure(row, error)
    return SyncResult(
        Action.FAILED,
        row.pk,
        row.customer_id,
        error=str(error),
        retry_at=values["next_attempt_at"],
        calls=calls,
    )


def report_failure(row: Customer, error: Exception) -> None:
    """Log and signal a failure already recorded on ``row``; raise it when
    the site asked for errors (``RAISE_ERRORS``)."""
    logger.warning("Sync of Autumn customer %r failed (attempt %d): %s", row.customer_id, row.attempts, error)
    customer_sync_failed.send(sender=Customer, customer=row, error=error)
    if conf.load().raise_errors:
        raise error


def retry_delay(attempts: int, error: Exception | None = None) -> timedelta:
    """Exponential backoff with jitter, at least what Autumn asked for."""
    settings = conf.load()
    delay = min(settings.retry_delay * 2 ** (attempts - 1), settings.retry_max_delay)
    delay *= random.uniform(0.8, 1.2)
    asked = getattr(error, "retry_after", None) or 0
    return timedelta(seconds=max(delay, asked))


#: The first key of the PostgreSQL advisory locks taken per row (the second
#: is the row's pk), chosen not to meet other apps' locks: "autu".
LOCK_CLASS = 0x61757475
#: How long a sync waits for another sync of the same row before it goes
#: ahead anyway (correctness never depends on the lock): longer than one
#: sync takes with the client's default deadline.
LOCK_WAIT = 90.0


@contextmanager
def _one_at_a_time(customer_pk: int) -> Iterator[None]:
    """On PostgreSQL, one sync of a row at a time across every worker: a
    session advisory lock, held across the requests (it locks no row, so
    a user's save never waits for it). Two tasks for one row then push
    once after the other instead of racing. Elsewhere, or in a
    transaction, or when the wait runs out, it goes ahead unlocked: the
    version checks keep the result right either way."""
    connection = transaction.get_connection(Customer.objects.db)
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    key = [LOCK_CLASS, customer_pk % 2**31]
    locked = False
    deadline = time.monotonic() + LOCK_WAIT
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
            locked = bool(cursor.fetchone()[0])
            if locked or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    if not locked:
        logger.warning(
            "Syncing mirror row %s without its lock: another sync held it %.0f s.", customer_pk, LOCK_WAIT
        )
    try:
        yield
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def _savepoint(using: str) -> Any:
    """A savepoint where an IntegrityError must not break the caller's
    transaction; nothing (no BEGIN/COMMIT) in autocommit, where it cannot."""
    return (
        transaction.atomic(using=using)
        if transaction.get_connection(using).in_atomic_block
        else nullcontext()
    )


def _require_version(row: Customer, **values: Any) -> None:
    """Write ``values`` only if nobody changed the row since we read it."""
    values.setdefault("updated", timezone.now())
    if not Customer.objects.filter(pk=row.pk, version=row.version).update(**values):
        raise _Stale
