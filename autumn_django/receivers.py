"""The receivers that follow the user model, connected in ``AppConfig.ready()``.

A save or delete writes the mirror row in the user's own transaction
(:func:`~autumn_django.sync.mark_changed`, :func:`~autumn_django.sync.mark_deleted`)
and enqueues the sync for after the commit. Saves that bypass signals
(``bulk_create``, ``QuerySet.update()``, raw SQL) are not seen here;
``manage.py autumn_sync`` covers them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_delete

from . import sync, tasks
from .signals import sync_enabled


def user_saved(sender: Any, instance: Any, raw: bool = False, using: str = "default", **kwargs: Any) -> None:
    if raw or not sync_enabled():
        return
    # A user's save must not fail because of us, unless the site asks.
    with sync.errors_logged("Could not record the Autumn sync of user %s; run autumn_sync.", instance.pk):
        tasks.enqueue_after_commit(sync.mark_changed(instance, using), using)


def user_deleting(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
    if not sync_enabled():
        return
    with sync.errors_logged("Could not record the Autumn delete of user %s; run autumn_sync.", instance.pk):
        tasks.enqueue_after_commit(sync.mark_deleted(instance, using), using)


def connect() -> None:
    """Follow the user model."""
    user_model = get_user_model()
    post_save.connect(user_saved, sender=user_model, dispatch_uid="autumn_django.user_saved")
    pre_delete.connect(user_deleting, sender=user_model, dispatch_uid="autumn_django.user_deleting")
