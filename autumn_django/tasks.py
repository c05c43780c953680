"""The background tasks: one per mirror row to bring up to date, and one per
chunk of ``autumn_sync --enqueue``.

They take primary keys, not model instances, so any backend can carry them
(the database, RQ, Celery on Django 6), and they read the object's data when
they run, not when they were enqueued. The default queue and priority are
fixed at decoration, as the Tasks API wants; ``AUTUMN["TASK_BACKEND"]`` and
``AUTUMN["TASK_QUEUE"]`` are applied with ``.using()`` when enqueueing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import conf, sources, sync, webhooks
from .bulk import BulkSync
from .client import bulk_client
from .compat import TaskResultStatus, task
from .exceptions import SyncFailed
from .models import Customer, WebhookEvent

logger = logging.getLogger("autumn_django.tasks")

#: Requests at once in one ``sync_users`` chunk task.
CHUNK_CONCURRENCY = 4

#: A row with work left and untouched this long has lost its task: a worker
#: was killed while running it, and django-tasks-db (like most backends)
#: does not run such a task again. Far longer than one sync takes.
STALE_AFTER = timedelta(minutes=5)
#: How often one worker process looks for such rows (after a task of its own).
SWEEP_EVERY = 60.0
#: The most rows one look re-enqueues; the next look takes the rest.
SWEEP_LIMIT = 100

_last_sweep = time.monotonic()  # a new worker first looks after SWEEP_EVERY
_sweep_lock = threading.Lock()


@task()
def sync_customer(customer_pk: int) -> dict[str, Any]:
    """Push (or delete) one customer; on a retryable failure, enqueue itself
    again for the row's ``next_attempt_at`` where the backend can defer."""
    result = sync.sync(customer_pk)
    if result.retry_at is not None:
        schedule_retry(customer_pk, result.retry_at)
    recover_stale()
    return result.as_dict()


@task()
def process_webhook_event(event_pk: int) -> dict[str, Any]:
    """Process one stored webhook event; on a failure, enqueue itself again
    for the event's ``next_attempt_at`` where the backend can defer."""
    event = webhooks.process(event_pk)
    if event is not None and event.state == WebhookEvent.State.FAILED and event.next_attempt_at:
        schedule_retry(event_pk, event.next_attempt_at, process_webhook_event)
    recover_stale()
    return {"event": event_pk, "state": event.state if event else None}


#: The longest a chunk task works before it hands the rest of its objects
#: on as a new task. Workers that share the rate budget each wait their turn
#: for slots: with ten of them a chunk of 500 updates takes about 220 s, and
#: RQ stops a job at 180 s unless told otherwise, after the calls were made
#: and before their rows were written.
CHUNK_TIME_LIMIT = 120.0
#: Objects a chunk task pushes (and records) at a time, between looks at
#: the time it has taken.
CHUNK_STEP = 25


@task()
def sync_objects(model: str, pks: list[Any], concurrency: int = CHUNK_CONCURRENCY) -> dict[str, Any]:
    """One chunk of ``autumn_sync --enqueue``: the bulk push over these
    objects of one customer source (``"auth.user"``, ``"teams.team"``),
    recorded every :data:`CHUNK_STEP` objects; past :data:`CHUNK_TIME_LIMIT`
    the objects left go to a new task, so no job timeout stops it."""
    objects = sources.registry().get(model).get_queryset().order_by("pk")
    runner = BulkSync(bulk_client(concurrency), concurrency=concurrency, batch_size=CHUNK_STEP)
    started, done = time.monotonic(), 0
    while done < len(pks):
        if done and time.monotonic() - started > CHUNK_TIME_LIMIT:
            configured(sync_objects).enqueue(model, pks[done:], concurrency)
            break
        step = pks[done : done + CHUNK_STEP]
        runner.push([objects.filter(pk__in=step)], include_deleting=False)
        done += len(step)
    return {**runner.finish().as_dict(), "handed_on": len(pks) - done}


@task()
def sync_users(user_pks: list[Any], concurrency: int = CHUNK_CONCURRENCY) -> dict[str, Any]:
    """A chunk of users, as enqueued before customer sources existed (kept so
    that such tasks still run after an upgrade)."""
    return sync_objects.call(get_user_model()._meta.label_lower, user_pks, concurrency)


def configured(task_: Any = None, **options: Any) -> Any:
    """``task_`` (default: sync_customer) moved to ``AUTUMN["TASK_BACKEND"]``
    and ``AUTUMN["TASK_QUEUE"]``, with any other ``.using()`` options."""
    settings = conf.load()
    return (task_ or sync_customer).using(
        backend=settings.task_backend, queue_name=settings.task_queue, **options
    )


def enqueue_after_commit(row: Customer | None, using: str = "default") -> None:
    """Enqueue the sync of ``row`` (a mirror row or None) once the current
    transaction commits; a rollback enqueues nothing. A row marked twice in
    one transaction (a team saved, then its first membership) is enqueued
    once: the task reads the row as it is at the commit."""
    if row is not None and not _waiting(row.pk, using):
        transaction.on_commit(_AfterCommit(row.pk), using=using)


class _AfterCommit:
    """The commit callback that enqueues one row's sync; it knows whether it
    has run, as a test's ``captureOnCommitCallbacks`` leaves it listed."""

    def __init__(self, customer_pk: int) -> None:
        self.customer_pk = customer_pk
        self.ran = False

    def __call__(self) -> None:
        self.ran = True
        _enqueue(self.customer_pk)


def _waiting(customer_pk: int, using: str) -> bool:
    """This transaction already has the row's sync waiting for its commit.
    Looks through the connection's commit callbacks only for a row already
    seen in this transaction (a savepoint rolled back may have dropped it)."""
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        return False
    seen: set[int] = connection.__dict__.setdefault("autumn_queued", set())
    if not connection.run_on_commit:
        seen.clear()  # a new transaction
    if customer_pk not in seen:
        seen.add(customer_pk)
        return False
    return any(
        isinstance(entry[1], _AfterCommit) and entry[1].customer_pk == customer_pk and not entry[1].ran
        for entry in connection.run_on_commit
    )


def _enqueue(customer_pk: int) -> None:
    with sync.errors_logged(
        "Could not enqueue the Autumn sync of mirror row %s; it stays pending for autumn_sync --retry.",
        customer_pk,
    ):
        result = configured().enqueue(customer_pk)
        if conf.load().raise_errors and result.status == TaskResultStatus.FAILED:
            error = Customer.objects.filter(pk=customer_pk).values_list("last_error", flat=True).first()
            raise SyncFailed(error or "the Autumn sync task failed")


def schedule_retry(pk: int, when: datetime, task_: Any = None) -> bool:
    """Enqueue ``task_`` (default: sync_customer) again for ``when`` if the
    backend can defer; else the work waits for ``autumn_sync --retry``.
    Returns whether it was enqueued."""
    configured_task = configured(task_)
    if not configured_task.get_backend().supports_defer:
        return False
    configured_task.using(run_after=when).enqueue(pk)
    return True


def enqueue_webhook_after_commit(event: WebhookEvent) -> None:
    """Process ``event`` in a task once the transaction that stored it commits."""
    transaction.on_commit(partial(_enqueue_webhook, event.pk))


def _enqueue_webhook(event_pk: int) -> None:
    with sync.errors_logged(
        "Could not enqueue Autumn webhook event %s; a worker's next sweep will.", event_pk
    ):
        configured(process_webhook_event).enqueue(event_pk)


def recover_stale(*, force: bool = False) -> int:
    """Enqueue again the rows and webhook events whose task died (see
    :data:`STALE_AFTER`), and failed webhook events whose retry is due.

    Every worker runs this after a task of its own, at most once a
    :data:`SWEEP_EVERY` per process, so recovery needs no cron entry as
    long as the site syncs anything at all; ``autumn_sync --retry`` from
    cron covers a site that is otherwise idle. Returns how many it enqueued.
    """
    global _last_sweep
    with _sweep_lock:
        now = time.monotonic()
        if not force and now - _last_sweep < SWEEP_EVERY:
            return 0
        _last_sweep = now
    cutoff = timezone.now() - STALE_AFTER
    pks = list(
        Customer.objects.outbox()
        .filter(updated__lt=cutoff)
        .order_by("updated")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    for pk in pks:
        with sync.errors_logged("Could not enqueue the recovery of mirror row %s.", pk):
            configured().enqueue(pk)
    events = list(
        WebhookEvent.objects.filter(
            Q(state=WebhookEvent.State.PENDING, received_at__lt=cutoff)
            | Q(state=WebhookEvent.State.FAILED, next_attempt_at__lte=timezone.now())
        )
        .order_by("received_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    for pk in events:
        with sync.errors_logged("Could not enqueue the processing of Autumn webhook event %s.", pk):
            configured(process_webhook_event).enqueue(pk)
    if pks or events:
        logger.info("Re-enqueued %d Autumn sync(s) and %d webhook event(s).", len(pks), len(events))
    return len(pks) + len(events)
