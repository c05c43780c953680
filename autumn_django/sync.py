"""The sync rules: bring a mirror row, and Autumn, to what its object says.

One module, used by the signal handlers (through the task), by
``manage.py autumn_sync`` and by the admin's actions; there is no second copy.

The object is a user, a team, any model registered as a customer source
(:mod:`autumn_django.sources`); "user" below stands for any of them.

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

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from . import billing, conf, contract, mapping, sources
from .client import AutumnClient, get_client
from .exceptions import AutumnError, Conflict, MappingError, MirrorWriteError, NotFound, message_text
from .mapping import Payload
from .models import Customer, CustomerFeature, CustomerPlan, object_key
from .signals import customer_sync_failed, customer_synced
from .sources import CustomerSource

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


def mark_changed(
    user: Any,
    using: str = "default",
    *,
    source: CustomerSource | None = None,
    created: bool = False,
    take: bool = True,
) -> Customer | None:
    """Record that ``user``'s customer (or any source object's) must be
    brought up to date.

    Returns the row when a sync is due (the caller enqueues it after commit),
    ``None`` when nothing is to be done. Costs one query when the payload is
    what Autumn already holds (a ``last_login`` save), and no request.
    ``created`` (an object saved for the first time) skips looking for a
    row it cannot have yet. ``take=False`` (a change seen through a
    dependency) never takes over a deleted object's row: in a cascade, a
    team's memberships go after the team was marked deleting, and must not
    bring its customer back.
    """
    source = source or sources.registry().for_object(user)
    row = None if created else _row_of(user, using)
    env = mapping.current_env()
    try:
        payload = mapping.payload_for(user, source) if mapping.should_sync(user, source) else None
    except MappingError as error:
        record_mapping_error(user, row, str(error), env, using, source, look=created)
        return None
    if payload is None:  # the object does not qualify (SHOULD_SYNC)
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
                **link_values(user),
                env=env,
                customer_id=payload.customer_id,
                state=Customer.State.PENDING,
                pushed_at=timezone.now(),
            )
    except IntegrityError:
        if _row_of(user, using) is not None:  # made meanwhile, or left by a deleted object with this pk
            return mark_changed(user, using, source=source, take=take)
        if not take:
            if not _held_by_unlinked(env, payload.customer_id, using):
                message = duplicate_message(payload.customer_id, env, using)
                record_mapping_error(user, None, message, env, using, source)
            return None
        taken = take_over(user, env, payload.customer_id, using)
        if taken is None:
            record_mapping_error(
                user, None, duplicate_message(payload.customer_id, env, using), env, using, source
            )
        return taken


def mark_deleted(user: Any, using: str = "default") -> Customer | None:
    """Record, before ``user`` (or any source object) is deleted, that its
    customer must go too.

    The row outlives the object, unlinked, until Autumn has confirmed the
    delete. With ``DELETE_POLICY = "keep"`` the row is only unlinked.
    """
    row = _row_of(user, using)
    if row is None:
        return None
    if conf.load().delete_policy == "keep" or row.state == Customer.State.DELETING:
        Customer.objects.using(using).filter(pk=row.pk).update(object_id=None, updated=timezone.now())
        return None
    return _bump(row, Customer.State.DELETING, using, object_id=None)


def _held_by_unlinked(env: str, customer_id: str, using: str) -> bool:
    """A row no object owns holds the id: an object deleted in this
    transaction (its row deleting, or kept by ``DELETE_POLICY = "keep"``)."""
    return (
        Customer.objects.using(using)
        .filter(env=env, customer_id=customer_id, object_id__isnull=True)
        .exists()
    )


def link_values(obj: Any) -> dict[str, Any]:
    """The row's columns that link it to ``obj``."""
    return {"content_type": ContentType.objects.get_for_model(obj), "object_id": object_key(obj)}


def source_object(row: Customer) -> Any:
    """The object ``row`` is for, read through its source's queryset (with the
    ``select_related`` the mapping needs), or None: deleted, unlinked, or of a
    model no longer registered."""
    [(_, obj)] = with_sources([row])
    Customer.source.set_cached_value(row, obj)  # type: ignore[attr-defined]
    return obj


def with_sources(rows: list[Customer]) -> list[tuple[Customer, Any]]:
    """``rows`` with their objects, read in one query per model through the
    sources' querysets; an object only left out of its source's queryset
    (archived) is read with the model's base manager, not taken for gone."""
    wanted: dict[int, list[Customer]] = {}
    for row in rows:
        if row.object_id is not None and row.content_type_id is not None:
            wanted.setdefault(row.content_type_id, []).append(row)
    found: dict[tuple[int, str], Any] = {}
    registry = sources.registry()
    for content_type_id, linked in wanted.items():
        source = registry.for_content_type_id(content_type_id)
        if source is None:
            continue
        keys = [row.object_id for row in linked]
        for obj in source.get_queryset().filter(pk__in=keys).order_by():
            found[(content_type_id, str(obj.pk))] = obj
        left_out = [key for key in keys if (content_type_id, key) not in found]
        if left_out:  # not in the source's queryset: gone, or only filtered out
            for obj in source.model_class._base_manager.filter(pk__in=left_out):
                found[(content_type_id, str(obj.pk))] = obj
    return [(row, found.get((row.content_type_id, row.object_id))) for row in rows]  # type: ignore[arg-type]


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
            object_id__isnull=True,
            state__in=[Customer.State.DELETING, Customer.State.GONE],
        )
        .only("pk")
        .first()
    )
    if holder is None:
        return None
    now = timezone.now()
    Customer.objects.using(using).filter(pk=holder.pk).update(
        **link_values(user),
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
    """The object's mirror row, with only the columns the rules read here.

    This runs on every save of every user (every login), where building the
    query cost more than running it: the SQL is compiled once per database
    and reused with the object's content type and key."""
    compiled = _ROW_SQL.get(using)
    if compiled is None:
        query = Customer.objects.using(using).only(*Customer.HOLDS_FIELDS)
        query = query.filter(content_type_id=-1, object_id=_KEY).order_by()[:1]
        sql, params = query.query.get_compiler(using).as_sql()
        compiled = _ROW_SQL[using] = (sql, tuple(param == _KEY for param in params))
    sql, is_key = compiled
    content_type_id = ContentType.objects.db_manager(using).get_for_model(user).pk
    params = [object_key(user) if key else content_type_id for key in is_key]
    return next(iter(Customer.objects.raw(sql, params, using=using)), None)


#: The compiled SQL of :func:`_row_of` per database alias, and which of its
#: parameters is the object's key (the other is its content type).
_ROW_SQL: dict[str, tuple[str, tuple[bool, ...]]] = {}
_KEY = "\x00key"


def _bump(row: Customer, state: str, using: str, **values: Any) -> Customer:
    now = timezone.now()
    pushing = {"pushed_at": now} if state == Customer.State.PENDING else {}
    Customer.objects.using(using).filter(pk=row.pk).update(
        state=state, version=F("version") + 1, next_attempt_at=None, updated=now, **pushing, **values
    )
    return row


def record_mapping_error(
    user: Any,
    row: Customer | None,
    message: str,
    env: str,
    using: str,
    source: CustomerSource | None = None,
    *,
    look: bool = False,
) -> None:
    """A mapping Autumn would refuse: a failed row with the message, nothing
    sent. ``look``: ``row`` was not looked for (a new object)."""
    source = source or sources.registry().for_object(user)
    logger.error("Not syncing %s: %s", source.describe(user), message)
    if row is None and look:
        row = _row_of(user, using)
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
                **link_values(user),
                env=env,
                customer_id=_invalid_id(source, user),
                state=Customer.State.FAILED,
                last_error=message_text(message),
            )
    except IntegrityError:
        pass


def _invalid_id(source: CustomerSource, obj: Any) -> str:
    """A placeholder id for the row of an object whose own id is refused:
    unique per object, and never a valid Autumn id (so never sent)."""
    return f"invalid:{source.label}:{obj.pk}"[:255]


# --- later: talking to Autumn --------------------------------------------------


@dataclass
class Decision:
    """What one row and object call for (:class:`Step`), decided without a
    query or a request, with what the step needs."""

    step: Step
    row: Customer | None
    obj: Any = None
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


def decide(row: Customer | None, obj: Any, env: str, *, force: bool = False) -> Decision:
    """Decide what bringing ``row`` (None for an object never mirrored) and
    ``obj`` (a user, a team; None when gone) to the desired state takes.
    Pure: the rules, no I/O."""
    if row is not None and row.state == Customer.State.DELETING:
        return Decision(Step.DELETE, row, obj)
    if row is not None and row.state == Customer.State.GONE:
        due = row.next_attempt_at is None or row.next_attempt_at <= timezone.now()
        return Decision(Step.DELETE if due else Step.SKIPPED, row, obj)
    if obj is None:  # unlinked and kept ("keep" policy): nothing to push
        return Decision(Step.SKIPPED, row)
    try:
        payload = mapping.payload_for(obj) if mapping.should_sync(obj) else None
    except MappingError as error:
        return Decision(Step.INVALID, row, obj, error=error)
    if payload is None:  # the object does not qualify (SHOULD_SYNC)
        if row is None:
            return Decision(Step.SKIPPED, row, obj)
        return Decision(Step.KEPT if conf.load().delete_policy == "keep" else Step.RETIRE, row, obj)
    known = row is not None and row.is_known_remotely and row.env == env
    if not force and row is not None and row.holds(payload, env):
        return Decision(Step.UNCHANGED, row, obj, payload, known)
    return Decision(Step.PUSH, row, obj, payload, known)


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
    """Keep what Autumn holds for a row, read outside a sync, billing
    state included."""
    with transaction.atomic():
        # A new version: a push under way records over this answer only
        # after reading it (its data and the billing tables stay one).
        Customer.objects.filter(pk=row_pk).update(
            **refreshed_values(customer), version=F("version") + 1, updated=timezone.now()
        )
        billing.store([(row_pk, customer)])


def refresh(row: Customer, client: AutumnClient | None = None) -> dict[str, Any]:
    """Read ``row``'s customer from Autumn now and keep it on the row;
    returns Autumn's answer. Raises the client's :class:`AutumnError`."""
    remote = (client or get_client()).get_customer(row.customer_id)
    store_remote(row.pk, remote)
    return remote


def link(obj: Any, customer: dict[str, Any]) -> tuple[Customer, bool]:
    """Mirror an existing Autumn customer as ``obj``'s row (a user's, a
    team's; made elsewhere, or the row was lost); returns the row and
    whether it is new."""
    with transaction.atomic():
        row, created = Customer.objects.update_or_create(
            **link_values(obj), defaults={**refreshed_values(customer), "state": Customer.State.SYNCED}
        )
        billing.store([(row.pk, customer)])
    return row, created


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
        row = Customer.objects.filter(pk=customer_pk).first()
        if made is not None and _abandoned(row, made):
            _compensate(client, env, made, calls)
            made = None
        if row is None:
            return SyncResult(Action.SKIPPED, customer_pk, calls=calls)
        forced = force or bool(calls)
        obj = source_object(row)
        try:
            if obj is None and row.object_id is not None and _vanished(row):
                raise _Stale
            decision = decide(row, obj, env, force=forced)
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
            if not _delete_unchanged(row):
                raise _Stale  # the user came back or changed meanwhile
        else:
            _require_version(row, **tombstone)
        if row.state != Customer.State.GONE:  # the first delete, not its confirmation
            customer_synced.send(sender=Customer, customer=row, action=Action.DELETED)
        retry_at = tombstone["next_attempt_at"] if tombstone else None
        return SyncResult(Action.DELETED, row.pk, row.customer_id, retry_at=retry_at, calls=calls)
    assert outcome.remote is not None and decision.payload is not None
    values = synced_values(outcome.remote, decision.payload)
    # The billing tables are rewritten only when the billing part changed:
    # a push that changes a name costs no transaction and no billing write.
    changed_billing = billing.changed(row.data, outcome.remote)
    try:
        with transaction.atomic() if changed_billing else _savepoint(Customer.objects.db):
            _require_version(row, **values, pushed_at=_landed(row.pushed_at))
            if changed_billing:
                billing.store([(row.pk, outcome.remote)])
    except (IntegrityError, DataError) as error:
        return _fail(row, write_error(error, values["customer_id"]), calls)
    for name, value in values.items():
        setattr(row, name, value)
    row.pushed_at = None
    customer_synced.send(sender=Customer, customer=row, action=outcome.action)
    return SyncResult(outcome.action, row.pk, row.customer_id, calls=calls)


def vanished(row: Customer | None, obj: Any) -> bool:
    """``row`` is linked to an object that is no longer there (deleted
    without signals): :func:`sync` treats it as deleted."""
    return (
        obj is None
        and row is not None
        and row.object_id is not None
        and sources.registry().for_content_type_id(row.content_type_id) is not None
    )


def _vanished(row: Customer) -> bool:
    """The row's object is gone without its delete being seen (a raw SQL
    delete, a cascade through ``QuerySet.update``): unlink the row and, by
    ``DELETE_POLICY``, delete its customer. Returns whether the row changed
    (a row of a model no longer registered is left alone)."""
    if sources.registry().for_content_type_id(row.content_type_id) is None:
        return False
    if conf.load().delete_policy == "keep" or row.state in (Customer.State.DELETING, Customer.State.GONE):
        _require_version(row, object_id=None)
    else:
        _require_version(row, state=Customer.State.DELETING, object_id=None, version=F("version") + 1)
    return True


def _delete_unchanged(row: Customer) -> bool:
    """Remove ``row`` if nobody changed it since it was read, in one
    statement that checks the version: Django's ``delete()`` would read the
    row and its billing rows first and then delete by pk alone, and a user
    taking the row over in between would lose it. Its billing rows go in the
    same transaction."""
    db = Customer.objects.db
    connection = transaction.get_connection(db)
    quote = connection.ops.quote_name
    meta = Customer._meta
    version = Customer._meta.get_field("version").column  # type: ignore[union-attr]
    with transaction.atomic(using=db):
        for model in (CustomerPlan, CustomerFeature):
            model.objects.using(db).filter(customer_id=row.pk).delete()
        with connection.cursor() as cursor:
            table, pk = quote(meta.db_table), quote(meta.pk.column)
            cursor.execute(
                f"DELETE FROM {table} WHERE {pk} = %s AND {quote(version)} = %s", [row.pk, row.version]
            )
            deleted = cursor.rowcount
        if not deleted:
            transaction.set_rollback(True, using=db)  # the billing rows stay with the row
    return bool(deleted)


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


def duplicate_message(customer_id: str, env: str | None = None, using: str = "default") -> str:
    """Two objects map to one customer id: name the one that holds it, so the
    site sees which mapping to fix. They never share the customer."""
    holder = None
    if env is not None:
        row = Customer.objects.using(using).filter(env=env, customer_id=customer_id).first()
        source = sources.registry().for_content_type_id(row.content_type_id) if row else None
        if row is not None and source is not None and row.object_id is not None:
            holder = source.describe(row.object_id)
    return (
        f"Autumn customer {customer_id!r} is already mirrored by {holder or 'another row'}; "
        "two objects map to one customer id, and they never share a customer. "
        "Check AUTUMN['CUSTOMER_ID'] and the customer_id of your customer sources."
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
