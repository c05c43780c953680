"""The background task: one per mirror row to bring up to date.

It takes the row's primary key, not a model instance, so any backend can
carry it (the database, RQ, Celery on Django 6), and it reads the user's
data when it runs, not when it was enqueued. The default queue and priority
are fixed at decoration, as the Tasks API wants; ``AUTUMN["TASK_BACKEND"]``
and ``AUTUMN["TASK_QUEUE"]`` are applied with ``.using()`` when enqueueing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction

from . import conf
from .compat import TaskResultStatus, task
from .exceptions import SyncFailed

logger = logging.getLogger("autumn_django.tasks")


@task()
def sync_customer(customer_pk: int) -> dict[str, Any]:
    """Push (or delete) one customer; on a retryable failure, enqueue itself
    again for the row's ``next_attempt_at`` where the backend can defer."""
    from .sync import sync

    result = sync(customer_pk)
    if result.retry_at is not None:
        schedule_retry(customer_pk, result.retry_at)
    return result.as_dict()


@task()
def sync_users(user_pks: list[Any]) -> dict[str, Any]:
    """One chunk of ``autumn_sync --enqueue``: the bulk push over these users."""
    from django.contrib.auth import get_user_model

    from .bulk import BulkSync, bulk_client

    users = get_user_model()._default_manager.filter(pk__in=user_pks).order_by("pk")
    summary = BulkSync(bulk_client(4), concurrency=4).push(users, include_deleting=False)
    return summary.as_dict()


def configured(task_: Any = None, **options: Any) -> Any:
    """``task_`` (default: sync_customer) moved to ``AUTUMN["TASK_BACKEND"]``
    and ``AUTUMN["TASK_QUEUE"]``, with any other ``.using()`` options."""
    return (task_ or sync_customer).using(
        backend=conf.get("TASK_BACKEND"), queue_name=conf.get("TASK_QUEUE"), **options
    )


def enqueue_after_commit(row: Any, using: str = "default") -> None:
    """Enqueue the sync of ``row`` (a mirror row or None) once the current
    transaction commits; a rollback enqueues nothing."""
    if row is not None:
        transaction.on_commit(partial(_enqueue, row.pk), using=using)


def _enqueue(customer_pk: int) -> None:
    try:
        result = configured().enqueue(customer_pk)
    except Exception:
        if conf.get("RAISE_ERRORS"):
            raise
        logger.exception(
            "Could not enqueue the Autumn sync of mirror row %s; it stays pending for autumn_sync --retry.",
            customer_pk,
        )
        return
    if conf.get("RAISE_ERRORS") and result.status == TaskResultStatus.FAILED:
        from .models import Customer

        error = Customer.objects.filter(pk=customer_pk).values_list("last_error", flat=True).first()
        raise SyncFailed(error or "the Autumn sync task failed")


def schedule_retry(customer_pk: int, when: datetime) -> bool:
    """Enqueue a retry for ``when`` if the backend can defer; else the row
    waits for ``autumn_sync --retry``. Returns whether it was enqueued."""
    task_ = configured()
    if not task_.get_backend().supports_defer:
        return False
    task_.using(run_after=when).enqueue(customer_pk)
    return True
