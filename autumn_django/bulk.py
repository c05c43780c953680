"""Many users at once: the sync engine's rules, batched for ``autumn_sync``.

The rules are :mod:`autumn_django.sync`'s (``plan``, ``execute``,
``synced_values``, ``failure_values``); this module only changes how the
database and the network are used, so that a million users cost
``N / batch_size`` queries and run as many requests at once as asked:

1. a chunk of users is read (streamed), with their mirror rows in one query;
2. each is planned; unchanged users cost nothing more;
3. rows for new users are created ``pending`` in one query *before* any
   request, so an interrupted run leaves them to finish next time (and
   ``get_or_create`` cannot make a duplicate);
4. the requests run in a thread pool (threads touch no database);
5. the results are written in one batch, but only to rows whose ``version``
   is unchanged since step 1; a row a user changed meanwhile is synced again
   on its own, in full, as the single-row path would.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import mapping, sync
from .client import AutumnClient
from .models import Customer
from .signals import customer_sync_failed, customer_synced

logger = logging.getLogger("autumn_django.bulk")

#: The columns a sync writes (see sync.synced_values and sync.failure_values).
WRITTEN_FIELDS = [
    "customer_id", "env", "name", "email", "fingerprint", "stripe_id", "metadata",
    "remote_created_at", "data", "synced_at", "state", "payload_hash", "last_error",
    "attempts", "next_attempt_at", "updated",
]  # fmt: skip

Item = tuple["Customer | None", Any]  # (mirror row or None, user or None)


@dataclass
class Summary:
    """What a run did, for the summary and ``--json``."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0
    dry_run: bool = False
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return self.counts[sync.FAILED]

    def add_error(self, user_pk: Any, customer_id: str | None, error: object) -> None:
        self.counts[sync.FAILED] += 1
        if len(self.errors) < 1000:  # enough to act on; the rows hold them all
            self.errors.append({"user": _jsonable(user_pk), "customer_id": customer_id, "error": str(error)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.counts[sync.CREATED],
            "updated": self.counts[sync.UPDATED],
            "unchanged": self.counts[sync.UNCHANGED],
            "deleted": self.counts[sync.DELETED],
            "failed": self.failed,
            "skipped": self.counts[sync.SKIPPED] + self.counts[sync.KEPT],
            "duration_seconds": round(self.duration, 3),
            "api_calls": dict(sorted(self.calls.items())),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "errors": self.errors,
        }


def chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


class BulkSync:
    """Runs the engine over many rows; one instance per command run.

    ``report`` receives a line per change (``-v 2``) and ``advance`` the
    number of items done after each chunk (the progress display).
    """

    def __init__(
        self,
        client: AutumnClient,
        *,
        concurrency: int = 32,
        batch_size: int = 500,
        dry_run: bool = False,
        report: Callable[[str], None] | None = None,
        advance: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.report = report or (lambda line: None)
        self.advance = advance or (lambda done, failed: None)
        self.summary = Summary(dry_run=dry_run)
        self.env = mapping.current_env()
        self._calls_before = Counter(client.calls)

    # --- what to run over ---------------------------------------------------------

    def push(self, users: QuerySet[Any], *, include_deleting: bool = True) -> Summary:
        """Bring every user in ``users`` (and, for a full run, every row left
        ``deleting``) to the desired state."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="autumn-sync") as pool:
            self._pool = pool
            for chunk in chunks(users.iterator(chunk_size=self.batch_size), self.batch_size):
                rows = {
                    row.user_id: row
                    # The JSON columns are read only for the rows that push (_run).
                    for row in Customer.objects.filter(user_id__in=[user.pk for user in chunk]).defer(
                        "data", "metadata"
                    )
                }
                self._run([(rows.get(user.pk), user) for user in chunk])
            if include_deleting:
                orphans = Customer.objects.filter(state=Customer.State.DELETING, user__isnull=True)
                for chunk in chunks(orphans.iterator(chunk_size=self.batch_size), self.batch_size):
                    self._run([(row, None) for row in chunk])
        return self.finish()

    def retry(self) -> Summary:
        """The outbox: rows still pending or deleting, and failed rows whose
        next attempt is due."""
        rows = outbox().select_related("user").order_by("pk")
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="autumn-sync") as pool:
            self._pool = pool
            for chunk in chunks(rows.iterator(chunk_size=self.batch_size), self.batch_size):
                self._run([(row, row.user) for row in chunk])
        return self.finish()

    def finish(self) -> Summary:
        self.summary.calls = Counter(self.client.calls) - self._calls_before
        self.summary.duration = time.monotonic() - self.summary.started
        return self.summary

    # --- one chunk ------------------------------------------------------------------

    def _run(self, items: list[Item]) -> None:
        plans = [sync.plan(row, user, self.env) for row, user in items]
        work: list[sync.Plan] = []
        new: list[sync.Plan] = []
        retire: list[sync.Plan] = []
        for step in plans:
            if step.kind in (sync.UNCHANGED, sync.SKIPPED, sync.KEPT):
                self.summary.counts[step.kind] += 1
            elif step.kind == sync.INVALID:
                self._invalid(step)
            elif step.kind == sync.RETIRE:
                retire.append(step)
            elif step.row is None:
                new.append(step)
            else:
                work.append(step)
        if self.dry_run:
            self._load_json([step.row for step in work if step.row is not None])
            for step in new + work + retire:
                self._report_planned(step)
            self.advance(len(items), self.summary.failed)
            return
        if retire:
            Customer.objects.filter(pk__in=[step.row.pk for step in retire if step.row]).update(
                state=Customer.State.DELETING, version=F("version") + 1, updated=timezone.now()
            )
            for step in retire:
                assert step.row is not None
                step.row.state, step.row.version = Customer.State.DELETING, step.row.version + 1
                work.append(sync.Plan(sync.DELETE, step.row, step.user))
        self._load_json([step.row for step in work if step.row is not None])
        work.extend(self._create_rows(new))
        outcomes = list(self._pool.map(lambda step: sync.execute(step, self.client), work))
        self._record(work, outcomes)
        self.advance(len(items), self.summary.failed)

    @staticmethod
    def _load_json(rows: list[Customer]) -> None:
        """The JSON columns left out when the chunk was read, for the rows
        that will be diffed and written: one query, not one per row."""
        deferred = [row for row in rows if row.get_deferred_fields()]
        if deferred:
            found = {
                pk: (data, metadata)
                for pk, data, metadata in Customer.objects.filter(
                    pk__in=[r.pk for r in deferred]
                ).values_list("pk", "data", "metadata")
            }
            for row in deferred:
                row.data, row.metadata = found.get(row.pk, (None, {}))

    def _create_rows(self, steps: list[sync.Plan]) -> list[sync.Plan]:
        """Mirror rows for users seen for the first time, ``pending``, before
        any request: an interrupted run leaves them to be finished."""
        rows = [
            Customer(user=step.user, env=self.env, customer_id=step.payload.customer_id)
            for step in steps
            if step.payload is not None
        ]
        try:
            with transaction.atomic():
                Customer.objects.bulk_create(rows, batch_size=self.batch_size)
        except IntegrityError:  # an id already held: find which, one by one
            created = []
            for row, step in zip(rows, steps, strict=True):
                try:
                    with transaction.atomic():
                        row.save(force_insert=True)
                    created.append(step)
                except IntegrityError:
                    row.pk = None
                    self.summary.add_error(
                        step.user.pk, row.customer_id, sync.duplicate_message(row.customer_id)
                    )
            steps = created
            rows = [row for row in rows if row.pk is not None]
        for row, step in zip(rows, steps, strict=True):
            step.row = row
        return steps

    def _record(self, work: list[sync.Plan], outcomes: list[sync.Outcome]) -> None:
        """Write every outcome of a chunk at once, to rows nobody changed."""
        now = timezone.now()
        updated: list[tuple[Customer, str, Exception | None]] = []
        deleted: list[Customer] = []
        stale: list[int] = []
        with transaction.atomic():
            versions = dict(
                Customer.objects.select_for_update()
                .filter(pk__in=[step.row.pk for step in work if step.row])
                .values_list("pk", "version")
            )
            for step, outcome in zip(work, outcomes, strict=True):
                row = step.row
                assert row is not None
                if versions.get(row.pk) != row.version:
                    stale.append(row.pk)
                    continue
                if outcome.error is not None:
                    values = sync.failure_values(row, outcome.error)
                elif outcome.action == sync.DELETED:
                    deleted.append(row)
                    continue
                else:
                    assert outcome.remote is not None and step.payload is not None
                    values = sync.synced_values(outcome.remote, step.payload)
                for name, value in {**values, "updated": now}.items():
                    setattr(row, name, value)
                updated.append((row, outcome.action, outcome.error))
            self._write(updated)
            Customer.objects.filter(pk__in=[row.pk for row in deleted]).delete()
        for row, action, error in updated:
            if error is not None:
                self.summary.add_error(row.user_id, row.customer_id, error)
                customer_sync_failed.send(sender=Customer, customer=row, error=error)
                self.report(f"failed    {row.customer_id} (user {row.user_id}): {error}")
            else:
                self.summary.counts[action] += 1
                customer_synced.send(sender=Customer, customer=row, action=action)
                self.report(f"{action:<9} {row.customer_id} (user {row.user_id})")
        for row in deleted:
            self.summary.counts[sync.DELETED] += 1
            customer_synced.send(sender=Customer, customer=row, action=sync.DELETED)
            self.report(f"deleted   {row.customer_id}")
        for pk in stale:  # changed under us: once more, alone and in full
            result = sync.sync(pk, client=self.client, force=True)
            if result.action == sync.FAILED:
                self.summary.add_error(None, result.customer_id, result.error)
            else:
                self.summary.counts[result.action] += 1

    def _write(self, updated: list[tuple[Customer, str, Exception | None]]) -> None:
        rows = [row for row, _, _ in updated]
        try:
            with transaction.atomic():
                write_rows(rows, WRITTEN_FIELDS)
        except IntegrityError:  # a customer id held by another row: one by one
            for index, (row, _, _) in enumerate(updated):
                try:
                    with transaction.atomic():
                        row.save(update_fields=WRITTEN_FIELDS)
                except IntegrityError:
                    error = sync.MappingError(sync.duplicate_message(row.customer_id))
                    Customer.objects.filter(pk=row.pk).update(
                        state=Customer.State.FAILED, last_error=str(error)
                    )
                    updated[index] = (row, sync.FAILED, error)

    def _invalid(self, step: sync.Plan) -> None:
        """A user the mapping cannot express: a failed row, nothing sent."""
        if not self.dry_run:
            sync.record_mapping_error(step.user, step.row, str(step.error), self.env, "default")
        self.summary.add_error(
            getattr(step.user, "pk", None), step.row.customer_id if step.row else None, step.error
        )

    def _report_planned(self, step: sync.Plan) -> None:
        user = getattr(step.user, "pk", None)
        if step.kind in (sync.DELETE, sync.RETIRE):
            assert step.row is not None
            self.summary.counts["would_delete"] += 1
            self.report(f"would delete {step.row.customer_id} (user {user})")
            return
        assert step.payload is not None
        if step.known and step.row is not None:
            changes = sync.differences(step.payload.fields, step.row.data or {})
            rename = step.payload.customer_id != step.row.customer_id
            self.summary.counts["would_update"] += 1
            what = ", ".join(sorted(changes)) + (" (rename)" if rename else "")
            self.report(f"would update {step.row.customer_id} (user {user}): {what or 'no field'}")
        else:
            self.summary.counts["would_create"] += 1
            self.report(f"would get_or_create {step.payload.customer_id} (user {user})")


def write_rows(rows: list[Customer], fields: list[str]) -> None:
    """Save ``fields`` of many rows in one statement run with executemany.

    Django's ``bulk_update`` builds a ``CASE WHEN`` expression for every field
    of every row; at sixteen fields that cost more CPU than the requests to
    Autumn (60% of a 2,000-user run). One parameterized UPDATE, prepared once
    and run for each row, does the same work for a fraction of it.
    """
    if not rows:
        return
    connection = transaction.get_connection(Customer.objects.db)
    meta = Customer._meta
    model_fields = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in model_fields)  # type: ignore[union-attr]
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"
    params = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for field in model_fields]  # type: ignore[union-attr]
        + [row.pk]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, str)) else str(value)


def bulk_client(concurrency: int) -> AutumnClient:
    """A client for bulk work: a connection for each thread, and paced to
    ``AUTUMN["RATE_LIMITS"]`` (Autumn's published limits less 10% unless set)."""
    from . import conf
    from .client import client_from_settings, published_rate_limits

    settings = conf.load()
    configured = conf.get("RATE_LIMITS")
    limits: dict[str, float] | None = None
    if configured is not False:
        limits = published_rate_limits(settings.api_version)
        limits.update(configured or {})
    return client_from_settings(settings, pool_size=concurrency, rate_limits=limits)


@dataclass
class Drift:
    """What ``--check`` found: each list is of (user pk, customer id, detail)."""

    missing: list[tuple[Any, str]] = field(default_factory=list)
    differing: list[tuple[Any, str, list[str]]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    idless: int = 0
    in_sync: int = 0
    invalid: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.missing or self.differing or self.orphans or self.invalid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "missing": [{"user": _jsonable(u), "customer_id": c} for u, c in self.missing],
            "differing": [
                {"user": _jsonable(u), "customer_id": c, "fields": f} for u, c, f in self.differing
            ],
            "orphans": self.orphans,
            "idless_customers": self.idless,
            "invalid": [{"user": _jsonable(u), "error": e} for u, e in self.invalid],
        }


def remote_index(client: AutumnClient) -> tuple[dict[str, dict[str, Any]], int]:
    """One pass over customers.list: id -> the fields we compare, and how
    many customers have no id (made by email only)."""
    index: dict[str, dict[str, Any]] = {}
    idless = 0
    for customer in client.iter_customers():
        if customer.get("id") is None:
            idless += 1
            continue
        index[customer["id"]] = {
            name: customer.get(name) for name in ("name", "email", "fingerprint", "metadata")
        }
    return index, idless


def check(client: AutumnClient, users: QuerySet[Any], batch_size: int = 500) -> Drift:
    """Compare every selected user with Autumn, reading only: a user whose
    customer is missing, one whose fields differ, and customers no user
    accounts for (orphans)."""
    from . import conf

    remote, idless = remote_index(client)
    drift = Drift(idless=idless)
    keep = conf.get("DELETE_POLICY") == "keep"
    for user in users.iterator(chunk_size=batch_size):
        if not mapping.should_sync(user):
            if keep:  # its customer may stay; not an orphan
                try:
                    remote.pop(mapping.payload_for(user).customer_id, None)
                except mapping.MappingError:
                    pass
            continue
        try:
            payload = mapping.payload_for(user)
        except mapping.MappingError as error:
            drift.invalid.append((user.pk, str(error)))
            continue
        held = remote.pop(payload.customer_id, None)
        if held is None:
            drift.missing.append((user.pk, payload.customer_id))
            continue
        differences = sync.differences(payload.fields, held)
        if differences:
            drift.differing.append((user.pk, payload.customer_id, sorted(differences)))
        else:
            drift.in_sync += 1
    drift.orphans = sorted(remote)
    return drift


def pull(client: AutumnClient, *, batch_size: int = 500, dry_run: bool = False) -> Summary:
    """Refresh the mirror's remote columns from customers.list, and link
    customers that already exist to the local users they belong to."""
    from django.contrib.auth import get_user_model

    summary = Summary(dry_run=dry_run)
    env = mapping.current_env()
    unlinked: dict[str, Any] = {}
    for user in get_user_model().objects.filter(autumn_customer__isnull=True).iterator(chunk_size=batch_size):
        try:
            if mapping.should_sync(user):
                unlinked[mapping.payload_for(user).customer_id] = user
        except mapping.MappingError:
            continue
    for page in chunks(client.iter_customers(), batch_size):
        page = [customer for customer in page if customer.get("id")]
        rows = {
            row.customer_id: row
            for row in Customer.objects.filter(
                env=env, customer_id__in=[c["id"] for c in page]
            ).select_related("user")
        }
        refreshed, linked = [], []
        for customer in page:
            row = rows.get(customer["id"])
            if row is None:
                user = unlinked.pop(customer["id"], None)
                if user is None:
                    continue
                row = Customer(user=user, env=env, state=Customer.State.SYNCED)
                linked.append(row)
            else:
                refreshed.append(row)
            for name, value in Customer.remote_columns(customer).items():
                setattr(row, name, value)
            row.payload_hash = ""  # compared afresh on the next push
        summary.counts["refreshed"] += len(refreshed)
        summary.counts["linked"] += len(linked)
        if not dry_run:
            with transaction.atomic():
                write_rows(refreshed, [*WRITTEN_FIELDS[:10], "payload_hash", "updated"])
                Customer.objects.bulk_create(linked, batch_size=batch_size)
    summary.calls = Counter(client.calls)
    summary.duration = time.monotonic() - summary.started
    return summary


def prune(
    client: AutumnClient, orphans: list[str], *, concurrency: int = 32, dry_run: bool = False
) -> Summary:
    """Delete remote customers that no local user accounts for."""
    summary = Summary(dry_run=dry_run)
    if dry_run:
        summary.counts["would_delete"] = len(orphans)
        return summary
    before = Counter(client.calls)

    def delete(customer_id: str) -> Exception | None:
        try:
            client.delete_customer(customer_id)
        except sync.NotFound:
            pass
        except sync.AutumnError as error:
            return error
        return None

    with ThreadPoolExecutor(concurrency, thread_name_prefix="autumn-prune") as pool:
        for customer_id, error in zip(orphans, pool.map(delete, orphans), strict=True):
            if error is None:
                summary.counts[sync.DELETED] += 1
            else:
                summary.add_error(None, customer_id, error)
    Customer.objects.filter(customer_id__in=orphans, user__isnull=True).delete()
    summary.calls = Counter(client.calls) - before
    summary.duration = time.monotonic() - summary.started
    return summary


def outbox() -> QuerySet[Customer]:
    """Rows with work left: pending or deleting (due now), or failed with a
    retry due. A failed row without ``next_attempt_at`` waits for a fix."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    return Customer.objects.filter(
        (Q(state__in=[Customer.State.PENDING, Customer.State.DELETING]) & due)
        | Q(state=Customer.State.FAILED, next_attempt_at__lte=timezone.now())
    )
