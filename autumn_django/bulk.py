"""Many objects at once: the sync engine's rules, batched for ``autumn_sync``.

The rules are :mod:`autumn_django.sync`'s (``decide``, ``execute``,
``synced_values``, ``failure_values``); this module only changes how the
database and the network are used, so that a million users cost
``N / batch_size`` queries and run as many requests at once as asked:

1. a chunk of objects (users, teams: each source in turn) is read
   (streamed), with their mirror rows in one query;
2. each is decided; unchanged users cost nothing more;
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
import math
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DataError, IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import billing, mapping, sources, sync
from .client import AutumnClient
from .exceptions import message_text
from .models import Customer
from .signals import customer_sync_failed, customer_synced
from .sync import Action, Decision, Step

logger = logging.getLogger("autumn_django.bulk")

#: The columns a sync writes (see sync.synced_values and sync.failure_values).
WRITTEN_FIELDS = [
    *Customer.REMOTE_FIELDS,
    "state",
    "payload_hash",
    "last_error",
    "attempts",
    "next_attempt_at",
    "pushed_at",
    "updated",
]

Item = tuple["Customer | None", Any]  # (mirror row or None, source object or None)


@dataclass
class Summary:
    """What a run did, for the summary and ``--json``. ``counts`` holds an
    :class:`~autumn_django.sync.Action` per customer, and words of a mode's
    own (``would_create``, ``refreshed``, ``linked``...)."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0
    dry_run: bool = False
    interrupted: bool = False
    #: The most requests the run kept in flight (adaptive, up to --concurrency).
    concurrency: int = 0
    #: The processes the run took (``autumn_sync --processes``).
    processes: int = 1

    @property
    def failed(self) -> int:
        return self.counts[Action.FAILED]

    def add_error(self, who: str | None, customer_id: str | None, error: object) -> None:
        """One failure; ``who`` is the object as messages name it (``user 5``)."""
        self.counts[Action.FAILED] += 1
        if len(self.errors) < 1000:  # enough to act on; the rows hold them all
            self.errors.append({"object": who, "customer_id": customer_id, "error": str(error)})

    def finish(self, client: AutumnClient, calls_before: Counter[str]) -> Summary:
        """Close the run: the calls ``client`` made since ``calls_before``
        and the time since the summary was started."""
        self.calls = Counter(client.calls) - calls_before
        self.duration = time.monotonic() - self.started
        return self

    def add(self, data: Mapping[str, Any]) -> None:
        """Count in another run's summary, as :meth:`as_dict` (and
        ``autumn_sync --json``) gave it: a shard's, run by another process."""
        for name in (*ACTION_WORDS, *EXTRA_WORDS):
            self.counts[ACTION_WORDS.get(name, name)] += int(data.get(name) or 0)
        self.calls.update(data.get("api_calls") or {})
        self.errors.extend(data.get("errors", [])[: max(0, 1000 - len(self.errors))])
        self.interrupted = self.interrupted or bool(data.get("interrupted"))
        # In flight at once across the processes: at most the sum of theirs.
        self.concurrency += int(data.get("concurrency") or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.counts[Action.CREATED],
            "updated": self.counts[Action.UPDATED],
            "unchanged": self.counts[Action.UNCHANGED],
            "deleted": self.counts[Action.DELETED],
            "failed": self.failed,
            "skipped": self.counts[Action.SKIPPED] + self.counts[Action.KEPT],
            "duration_seconds": round(self.duration, 3),
            "api_calls": dict(sorted(self.calls.items())),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "errors": self.errors,
        }


#: The counts of :meth:`Summary.as_dict`, by their names there.
ACTION_WORDS = {
    "created": Action.CREATED,
    "updated": Action.UPDATED,
    "unchanged": Action.UNCHANGED,
    "deleted": Action.DELETED,
    "failed": Action.FAILED,
    "skipped": Action.SKIPPED,
}
#: The counts of a mode's own that a summary may hold.
EXTRA_WORDS = ("would_create", "would_update", "would_delete", "refreshed", "linked")

#: The most requests ``autumn_sync`` keeps in flight unless ``--concurrency``
#: says otherwise: at 150 ms an answer, enough for about 1,700 calls a second.
MAX_CONCURRENCY = 256
#: Objects for each process before ``autumn_sync --processes auto`` starts
#: another: starting one costs about a second (Django's own start-up).
OBJECTS_PER_PROCESS = 2_000
#: The most processes ``--processes auto`` starts.
MAX_PROCESSES = 8


def shard_of(key: Any, count: int) -> int:
    """Which of ``count`` shards (1 to ``count``) the object with this
    primary key belongs to: the same in every process and on every machine."""
    return zlib.crc32(str(key).encode()) % count + 1


#: Where cgroup v2 is mounted, and where this process's cgroup is named.
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, within the CPU quota
    (cgroup v2 ``cpu.max``: a container's, a systemd ``CPUQuota=``) of its
    cgroup and of every cgroup above it, at least one."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        lines = PROC_CGROUP.read_text().splitlines()
        path = CGROUP_ROOT / next(line[3:] for line in lines if line.startswith("0::")).strip().lstrip("/")
    except (OSError, StopIteration):
        path = CGROUP_ROOT
    for folder in (path, *path.parents):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                cpus = min(cpus, int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == CGROUP_ROOT:
            break
    return max(1, int(cpus))


def processes_for(total: int) -> int:
    """How many processes ``autumn_sync --processes auto`` runs ``total``
    objects in: one per CPU (:func:`available_cpus`; a bulk run is bound by
    the interpreter, not the network, once its concurrency has grown), at
    most :data:`MAX_PROCESSES`, and one for every :data:`OBJECTS_PER_PROCESS`."""
    return max(1, min(available_cpus(), MAX_PROCESSES, total // OBJECTS_PER_PROCESS))


#: Where the adaptive concurrency starts (and never goes under 1).
START_CONCURRENCY = 16


class AdaptiveConcurrency:
    """How many requests a bulk run keeps in flight, found as TCP finds its
    window: additive increase while Autumn answers fast and without pushback,
    multiplicative decrease at the first 429, 5xx or failed connection.

    Starts at :data:`START_CONCURRENCY` and doubles each round trip (one more
    slot per answer) until the first pushback or slow answer, then grows by
    one slot per round trip; a pushback halves it, at most once per round
    trip (the answers of one burst are one signal). "Fast" is within twice
    the fastest answer seen. Never above ``ceiling`` (``--concurrency``).
    Pacing to Autumn's limits is separate (:mod:`autumn_django.pacing`):
    this only decides how much waits on the network at once.
    """

    def __init__(
        self, ceiling: int, *, start: int = START_CONCURRENCY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(min(start, self.ceiling))
        self.highest = int(self.limit)
        self.decreases = 0
        self._in_flight = 0
        self._fastest = math.inf
        self._growing_fast = True
        self._calm_after = -math.inf
        self._clock = clock
        self._condition = threading.Condition()

    def acquire(self) -> float:
        """Wait for a slot; returns the time the request starts."""
        with self._condition:
            while self._in_flight >= int(self.limit):
                self._condition.wait()
            self._in_flight += 1
        return self._clock()

    def release(self, started: float, pushback: bool) -> None:
        """A request ended: ``pushback`` if Autumn pushed back (429, 5xx, a
        failed connection, retried or not)."""
        now = self._clock()
        seconds = now - started
        with self._condition:
            self._in_flight -= 1
            if pushback:
                if now >= self._calm_after:
                    self.limit = max(1.0, self.limit / 2)
                    self.decreases += 1
                    self._growing_fast = False
                    self._calm_after = now + max(
                        seconds, self._fastest if math.isfinite(self._fastest) else 0
                    )
            else:
                self._fastest = min(self._fastest, seconds)
                if seconds <= 2 * self._fastest + 0.005:
                    step = 1.0 if self._growing_fast else 1.0 / self.limit
                    self.limit = min(float(self.ceiling), self.limit + step)
                else:
                    self._growing_fast = False  # answers slow down: stop doubling
            self.highest = max(self.highest, int(self.limit))
            self._condition.notify_all()


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
        concurrency: int = MAX_CONCURRENCY,
        batch_size: int = 500,
        dry_run: bool = False,
        report: Callable[[str], None] | None = None,
        advance: Callable[[int, int], None] | None = None,
        shard: tuple[int, int] = (1, 1),
    ) -> None:
        number, count = shard
        if not 1 <= number <= count:
            raise ValueError(f"shard {number} of {count} does not exist: the first is 1 of {count}.")
        self.client = client
        #: ``(K, N)``: this run takes the objects of each source whose key
        #: falls in shard K of N (:func:`shard_of`; ``autumn_sync --shard
        #: K/N``); ``(1, 1)``: all of them.
        self.shard = shard
        self.concurrency = concurrency
        #: Requests in flight, adapted between 1 and ``concurrency``.
        self.adaptive = AdaptiveConcurrency(concurrency)
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.report = report or (lambda line: None)
        self.advance = advance or (lambda done, failed: None)
        self.summary = Summary(dry_run=dry_run)
        self.env = mapping.current_env()
        self._taken: list[int] = []
        self._calls_before = Counter(client.calls)

    # --- what to run over ---------------------------------------------------------

    def push(self, selections: Iterable[QuerySet[Any]], *, include_deleting: bool = True) -> Summary:
        """Bring every object of ``selections`` (a queryset per source: users,
        teams) and, for a full run, every row left ``deleting`` to the
        desired state."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="autumn-sync") as pool:
            self._pool = pool
            for objects in selections:
                self._push_source(objects)
            if include_deleting:
                orphans = Customer.objects.orphans()
                for chunk in chunks(orphans.iterator(chunk_size=self.batch_size), self.batch_size):
                    self._run([(row, None) for row in chunk])
                self._sweep_vanished()
        return self.finish()

    def _sweep_vanished(self) -> None:
        """Rows whose object was deleted without signals (raw SQL, a
        ``QuerySet`` delete of another app that bypassed them): a full run
        looks for them, a query per chunk of rows, and deletes their
        customers by the single-row rule."""
        for source in sources.registry():
            model = source.model_class
            linked = (
                Customer.objects.filter(
                    content_type=ContentType.objects.get_for_model(model), object_id__isnull=False
                )
                .order_by("pk")
                .values_list("pk", "object_id")
            )
            for chunk in chunks(linked.iterator(chunk_size=self.batch_size), self.batch_size):
                keys = [key for _, key in chunk]
                present = {
                    str(pk) for pk in model._base_manager.filter(pk__in=keys).values_list("pk", flat=True)
                }
                gone = [pk for pk, key in chunk if key not in present]
                if gone and not self.dry_run:
                    self._resync(dict.fromkeys(gone))
                elif gone:
                    self.summary.counts["would_delete"] += len(gone)

    def _push_source(
        self, objects: QuerySet[Any], *, force: bool = False, missing: Collection[str] = ()
    ) -> None:
        content_type = ContentType.objects.get_for_model(objects.model)
        for chunk in self._own_chunks(objects):
            rows = {
                row.object_id: row
                # The JSON columns are read only for the rows that push (_run).
                for row in Customer.objects.filter(
                    content_type=content_type, object_id__in=[str(obj.pk) for obj in chunk]
                ).defer("data", "metadata")
            }
            self._run([(rows.get(str(obj.pk)), obj) for obj in chunk], force=force, missing=missing)

    def _own_chunks(self, objects: QuerySet[Any]) -> Iterator[list[Any]]:
        """The chunks of ``objects`` (ordered by primary key) this run takes:
        all, or with a shard, those of its keys (by a hash of each key, so
        that an object made or deleted while the shards run moves no other
        object to another shard), found from a scan of the keys alone so
        that no process loads the others' objects."""
        number, count = self.shard
        if count == 1:
            yield from chunks(objects.iterator(chunk_size=self.batch_size), self.batch_size)
            return
        keys = objects.values_list("pk", flat=True).iterator(chunk_size=self.batch_size * count)
        own = (key for key in keys if shard_of(key, count) == number)
        # A union of querysets cannot be filtered: its objects are read by key.
        every = objects.model._base_manager.order_by("pk") if objects.query.combinator else objects
        for chunk in chunks(own, self.batch_size):
            yield list(every.filter(pk__in=chunk))

    def retry(self) -> Summary:
        """The outbox: rows still pending or deleting, and failed rows whose
        next attempt is due."""
        rows = Customer.objects.outbox().order_by("pk")
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="autumn-sync") as pool:
            self._pool = pool
            for chunk in chunks(rows.iterator(chunk_size=self.batch_size), self.batch_size):
                self._run(sync.with_sources(chunk))
        return self.finish()

    def repair(self, objects: QuerySet[Any], missing: Collection[str]) -> Summary:
        """Push ``objects`` in full whatever their rows say Autumn holds (the
        payload hash is ignored): ``get_or_create`` for those whose customer
        id is in ``missing`` (lost at Autumn), ``update`` of every field for
        the others (they differ). For what ``--check`` found."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="autumn-sync") as pool:
            self._pool = pool
            self._push_source(objects, force=True, missing=missing)
        return self.finish()

    def finish(self) -> Summary:
        self.summary.concurrency = self.adaptive.highest
        return self.summary.finish(self.client, self._calls_before)

    # --- one chunk ------------------------------------------------------------------

    def _run(self, items: Sequence[Item], *, force: bool = False, missing: Collection[str] = ()) -> None:
        gone = [row.pk for row, obj in items if row is not None and sync.vanished(row, obj)]
        if gone:  # deleted without signals: each alone, by sync's rule for it
            items = [(row, obj) for row, obj in items if not sync.vanished(row, obj)]
            if not self.dry_run:
                self._resync(dict.fromkeys(gone))
        decisions = [sync.decide(row, obj, self.env, force=force) for row, obj in items]
        for decision in decisions:
            if decision.payload is not None and decision.payload.customer_id in missing:
                decision.known = False  # lost at Autumn: get_or_create it, no update to fail first
        work: list[Decision] = []
        new: list[Decision] = []
        retire: list[Decision] = []
        for decision in decisions:
            if decision.step in sync.IDLE_STEPS:
                self.summary.counts[Action(decision.step.value)] += 1
            elif decision.step == Step.INVALID:
                self._invalid(decision)
            elif decision.step == Step.RETIRE:
                retire.append(decision)
            elif decision.row is None:
                new.append(decision)
            else:
                work.append(decision)
        if self.dry_run:
            self._load_json([decision.row for decision in work if decision.row is not None])
            for decision in new + work + retire:
                self._report_planned(decision)
            self.advance(len(items), self.summary.failed)
            return
        if retire:
            Customer.objects.filter(pk__in=[decision.row.pk for decision in retire if decision.row]).update(
                state=Customer.State.DELETING, version=F("version") + 1, updated=timezone.now()
            )
            for decision in retire:
                assert decision.row is not None
                decision.row.state, decision.row.version = Customer.State.DELETING, decision.row.version + 1
                work.append(Decision(Step.DELETE, decision.row, decision.obj))
        self._load_json([decision.row for decision in work if decision.row is not None])
        self._mark_pushing([decision.row for decision in work if decision.step == Step.PUSH and decision.row])
        work.extend(self._create_rows(new))
        outcomes = list(self._pool.map(lambda decision: self._execute(decision, force), work))
        self._record(work, outcomes)
        self.advance(len(items), self.summary.failed)

    def _execute(self, decision: Decision, force: bool) -> sync.Outcome:
        """One decision's requests, within the adaptive concurrency."""
        started = self.adaptive.acquire()
        before = self.client.thread_pushbacks()
        try:
            outcome = sync.execute(decision, self.client, force=force)
        except BaseException:
            self.adaptive.release(started, pushback=True)
            raise
        self.adaptive.release(started, pushback=self.client.thread_pushbacks() != before)
        return outcome

    @staticmethod
    def _mark_pushing(rows: list[Customer]) -> None:
        """``pushed_at`` on the rows about to be pushed, in one query, before
        any request: a delete that overtakes a push then knows to confirm
        itself later (see :mod:`autumn_django.sync`)."""
        now = timezone.now()
        rows = [row for row in rows if not sync.freshly_marked(row)]
        if not rows:
            return
        Customer.objects.filter(pk__in=[row.pk for row in rows]).update(pushed_at=now)
        for row in rows:
            row.pushed_at = now

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

    def _create_rows(self, decisions: list[Decision]) -> list[Decision]:
        """Mirror rows for users seen for the first time, ``pending``, before
        any request: an interrupted run leaves them to be finished."""
        rows = [
            Customer(
                **sync.link_values(decision.obj),
                env=self.env,
                customer_id=decision.payload.customer_id,
                pushed_at=timezone.now(),
            )
            for decision in decisions
            if decision.payload is not None
        ]
        try:
            with transaction.atomic():
                Customer.objects.bulk_create(rows, batch_size=self.batch_size)
        except (IntegrityError, DataError):  # an id already held: find which, one by one
            created = []
            for row, decision in zip(rows, decisions, strict=True):
                try:
                    with transaction.atomic():
                        row.save(force_insert=True)
                    created.append(decision)
                except (IntegrityError, DataError) as error:
                    row.pk = None
                    taken = isinstance(error, IntegrityError) and sync.take_over(
                        decision.obj, self.env, row.customer_id
                    )
                    if taken:  # a deleted user's row, still deleting: synced alone after the chunk
                        self._taken.append(taken.pk)
                        continue
                    self.summary.add_error(
                        describe(decision.obj), row.customer_id, sync.write_error(error, row.customer_id)
                    )
            decisions = created
            rows = [row for row in rows if row.pk is not None]
        for row, decision in zip(rows, decisions, strict=True):
            decision.row = row
        return decisions

    def _record(self, work: list[Decision], outcomes: list[sync.Outcome]) -> None:
        """Write every outcome of a chunk at once, to rows nobody changed."""
        now = timezone.now()
        updated: list[tuple[Customer, Action, Exception | None]] = []
        deleted: list[Customer] = []
        billed: list[tuple[int, dict[str, Any] | None]] = []  # rows whose billing state changed
        stale: dict[int, str | None] = {}  # row pk -> a customer id its push made, if any
        with transaction.atomic():
            current = {
                pk: (version, pushed_at)
                for pk, version, pushed_at in Customer.objects.select_for_update()
                .filter(pk__in=[decision.row.pk for decision in work if decision.row])
                .values_list("pk", "version", "pushed_at")
            }
            for decision, outcome in zip(work, outcomes, strict=True):
                row = decision.row
                assert row is not None
                version, pushed_at = current.get(row.pk, (None, None))
                if version != row.version:
                    stale[row.pk] = sync.made_by(decision, outcome)
                    continue
                if outcome.error is not None:
                    values = {**sync.failure_values(row, outcome.error), "pushed_at": pushed_at}
                elif outcome.action == Action.DELETED:
                    tombstone = sync.tombstone_values(row)
                    if tombstone is None:
                        deleted.append(row)
                        continue
                    values = {**tombstone, "pushed_at": pushed_at}
                else:
                    assert outcome.remote is not None and decision.payload is not None
                    values = sync.synced_values(outcome.remote, decision.payload)
                    if billing.changed(row.data, outcome.remote):
                        billed.append((row.pk, outcome.remote))
                    # Landed: no push of ours is on its way, unless another began since.
                    values["pushed_at"] = None if pushed_at == row.pushed_at else pushed_at
                for name, value in {**values, "updated": now}.items():
                    setattr(row, name, value)
                updated.append((row, outcome.action, outcome.error))
            self._write(updated)
            billing.store(billed)
            Customer.objects.filter(pk__in=[row.pk for row in deleted]).delete()
        for row, action, error in updated:
            if error is not None:
                self.summary.add_error(describe_row(row), row.customer_id, error)
                customer_sync_failed.send(sender=Customer, customer=row, error=error)
                self.report(f"failed    {row.customer_id} ({describe_row(row)}): {error}")
            else:
                self.summary.counts[action] += 1
                customer_synced.send(sender=Customer, customer=row, action=action)
                self.report(f"{action:<9} {row.customer_id} ({describe_row(row)})")
        for row in deleted:
            self.summary.counts[Action.DELETED] += 1
            customer_synced.send(sender=Customer, customer=row, action=Action.DELETED)
            self.report(f"deleted   {row.customer_id}")
        # Changed under us (or a deleted user's row taken over): once more,
        # alone and in full, removing what a push made for a row now deleted.
        retake = {**stale, **dict.fromkeys(self._taken)}
        self._taken.clear()
        self._resync(retake)

    def _resync(self, rows: dict[int, str | None]) -> None:
        """Sync these rows one by one, in full (row pk -> a customer id a
        push made for it, to remove if the row turns out deleted)."""
        for pk, made in rows.items():
            result = sync.sync(pk, client=self.client, force=True, made=made)
            if result.action == Action.FAILED:
                self.summary.add_error(None, result.customer_id, result.error)
            else:
                self.summary.counts[result.action] += 1

    def _write(self, updated: list[tuple[Customer, Action, Exception | None]]) -> None:
        rows = [row for row, _, _ in updated]
        try:
            with transaction.atomic():
                write_rows(rows, WRITTEN_FIELDS)
        except (IntegrityError, DataError):  # a row the database refuses: find which, one by one
            for index, (row, _, _) in enumerate(updated):
                try:
                    with transaction.atomic():
                        row.save(update_fields=WRITTEN_FIELDS)
                except (IntegrityError, DataError) as failure:
                    error = sync.write_error(failure, row.customer_id)
                    Customer.objects.filter(pk=row.pk).update(
                        state=Customer.State.FAILED, last_error=message_text(error)
                    )
                    updated[index] = (row, Action.FAILED, error)

    def _invalid(self, decision: Decision) -> None:
        """A user the mapping cannot express: a failed row, nothing sent."""
        if not self.dry_run:
            sync.record_mapping_error(decision.obj, decision.row, str(decision.error), self.env, "default")
        self.summary.add_error(
            describe(decision.obj),
            decision.row.customer_id if decision.row else None,
            decision.error,
        )

    def _report_planned(self, decision: Decision) -> None:
        who = describe(decision.obj) if decision.obj is not None else describe_row(decision.row)
        if decision.step in (Step.DELETE, Step.RETIRE):
            assert decision.row is not None
            self.summary.counts["would_delete"] += 1
            self.report(f"would delete {decision.row.customer_id} ({who})")
            return
        assert decision.payload is not None
        if decision.known and decision.row is not None:
            changes = sync.differences(decision.payload.fields, decision.row.data or {})
            rename = decision.payload.customer_id != decision.row.customer_id
            self.summary.counts["would_update"] += 1
            what = ", ".join(sorted(changes)) + (" (rename)" if rename else "")
            self.report(f"would update {decision.row.customer_id} ({who}): {what or 'no field'}")
        else:
            self.summary.counts["would_create"] += 1
            self.report(f"would get_or_create {decision.payload.customer_id} ({who})")


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


def describe(obj: Any) -> str | None:
    """An object as messages name it: ``user 5``, ``team 3``."""
    if obj is None:
        return None
    source = sources.registry().for_model(type(obj))
    return source.describe(obj) if source else f"{type(obj).__name__} {obj.pk}"


def describe_row(row: Customer | None) -> str:
    """A row's object as messages name it, with no query; ``no object`` once
    the object is deleted."""
    if row is None or row.object_id is None:
        return "no object"
    source = sources.registry().for_content_type_id(row.content_type_id)
    return source.describe(row.object_id) if source else f"object {row.object_id}"


def jsonable(value: Any) -> Any:
    """A primary key as JSON can carry it (a UUID as its text)."""
    return value if value is None or isinstance(value, (int, str)) else str(value)
