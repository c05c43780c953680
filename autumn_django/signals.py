"""Signals: the engine's own, for sites to hook, and the handlers that
follow the user model.

``customer_synced`` is sent with ``customer`` (the mirror row) and ``action``
(``"created"``, ``"updated"``, ``"deleted"``) after Autumn confirmed a change;
``customer_sync_failed`` with ``customer`` and ``error`` after a failed
attempt was recorded on the row.

Saves that bypass signals (``bulk_create``, ``QuerySet.update()``, raw SQL)
are not seen here; ``manage.py autumn_sync`` covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_delete
from django.dispatch import Signal

logger = logging.getLogger("autumn_django.signals")

customer_synced = Signal()
customer_sync_failed = Signal()

_disabled: ContextVar[bool] = ContextVar("autumn_sync_disabled", default=False)


@contextmanager
def disable_sync() -> Iterator[None]:
    """Ignore user saves and deletes in this block (and only in this thread or
    task), e.g. for a bulk import; run ``autumn_sync`` afterwards."""
    token = _disabled.set(True)
    try:
        yield
    finally:
        _disabled.reset(token)


def sync_enabled() -> bool:
    return not _disabled.get()


def user_saved(sender: Any, instance: Any, raw: bool = False, using: str = "default", **kwargs: Any) -> None:
    if raw or not sync_enabled():
        return
    from . import sync, tasks

    _guarded(lambda: tasks.enqueue_after_commit(sync.mark_changed(instance, using), using), instance)


def user_deleting(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
    if not sync_enabled():
        return
    from . import sync, tasks

    _guarded(lambda: tasks.enqueue_after_commit(sync.mark_deleted(instance, using), using), instance)


def _guarded(action: Any, user: Any) -> None:
    """A user's save must not fail because of us, unless the site asks."""
    from . import conf

    try:
        action()
    except Exception:
        if conf.get("RAISE_ERRORS"):
            raise
        logger.exception("Could not record the Autumn sync of user %s; run autumn_sync.", user.pk)


def connect() -> None:
    """Follow the user model (called from the app's ``ready()``)."""
    user_model = get_user_model()
    post_save.connect(user_saved, sender=user_model, dispatch_uid="autumn_django.user_saved")
    pre_delete.connect(user_deleting, sender=user_model, dispatch_uid="autumn_django.user_deleting")
