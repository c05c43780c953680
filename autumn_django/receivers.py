"""The receivers that follow the customer sources, connected in ``AppConfig.ready()``.

A save or delete of a source object (a user, a team) writes its mirror row
in the object's own transaction (:func:`~autumn_django.sync.mark_changed`,
:func:`~autumn_django.sync.mark_deleted`) and enqueues the sync for after
the commit. A change to a model a source depends on (a user's email, for
the teams the user owns) marks the dependent objects the same way; an
unchanged payload costs no task. Saves that bypass signals
(``bulk_create``, ``QuerySet.update()``, raw SQL, ``on_delete=SET_NULL``)
are not seen here; ``manage.py autumn_sync`` covers them.

The receivers are connected to each model the registry names (the
sources', their dependencies', proxies of them), so a model that is not
one costs nothing, not even Django's fast delete; a change of
``AUTUMN`` (``override_settings`` in tests) connects them again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from django.core.signals import setting_changed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver

from . import sources, sync, tasks
from .signals import sync_enabled
from .sources import CustomerSource

logger = logging.getLogger("autumn_django.receivers")


def object_saved(
    sender: Any,
    instance: Any,
    raw: bool = False,
    using: str = "default",
    created: bool = False,
    update_fields: Collection[str] | None = None,
    **kwargs: Any,
) -> None:
    if raw or not sync_enabled():
        return
    watched = _watching(sender)
    if watched is None:
        return
    with sync.errors_logged(
        "Could not record the Autumn sync of %s %s; run autumn_sync.", sender, instance.pk
    ):
        source, feeds = watched
        if source is not None:
            tasks.enqueue_after_commit(
                sync.mark_changed(instance, using, source=source, created=created), using
            )
        for dependent, dependency in feeds:
            if dependency.customers is not None and dependency.concerns(update_fields):
                _mark(dependent, dependency.customers(instance), using)


def object_deleting(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
    """Before a source object goes: its row is marked (or, under
    ``DELETE_POLICY = "keep"``, only unlinked) in the same transaction. The
    link is cleared even inside ``disable_sync()``: it must never point at
    an object that is gone."""
    watched = _watching(sender)
    if watched is None or watched[0] is None:
        return
    with sync.errors_logged(
        "Could not record the Autumn delete of %s %s; run autumn_sync.", sender, instance.pk
    ):
        row = sync.mark_deleted(instance, using)
        if sync_enabled():
            tasks.enqueue_after_commit(row, using)


def object_deleted(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
    """After a row a source depends on is deleted (a membership): its
    dependents are re-synced."""
    if not sync_enabled():
        return
    watched = _watching(sender)
    if watched is None:
        return
    with sync.errors_logged(
        "Could not record the Autumn sync after deleting %s %s; run autumn_sync.", sender, instance.pk
    ):
        for dependent, dependency in watched[1]:
            if dependency.customers is not None:
                _mark(dependent, dependency.customers(instance), using)


def relation_changed(
    sender: Any,
    instance: Any,
    action: str,
    model: Any,
    pk_set: set[Any] | None,
    using: str = "default",
    **kwargs: Any,
) -> None:
    """A many-to-many ``through`` model a source depends on: ``.add()``,
    ``.remove()`` and ``.clear()`` re-sync the customers on either side.
    ``.clear()`` names no objects when it is done, so the related keys are
    read just before (``pre_clear``)."""
    if action not in ("pre_clear", "post_add", "post_remove", "post_clear") or not sync_enabled():
        return
    watched = _watching(sender)
    if watched is None or not watched[1]:
        return
    with sync.errors_logged(
        "Could not record the Autumn sync of %s %s; run autumn_sync.", sender, instance.pk
    ):
        registry = sources.registry()
        other = registry.for_model(model)
        cleared = instance.__dict__.setdefault("_autumn_cleared", {})
        if action == "pre_clear":
            if other is not None:
                cleared[sender] = _related_keys(sender, instance, model)
            return
        if action == "post_clear":
            pk_set = cleared.pop(sender, None)
        own = registry.for_model(type(instance))
        if own is not None:
            _mark(own, [instance], using)
        if other is not None and pk_set:
            _mark(other, other.get_queryset().filter(pk__in=pk_set), using)


def _related_keys(through: Any, instance: Any, model: Any) -> set[Any]:
    """The keys of the ``model`` objects ``instance`` is linked to through
    ``through`` (a relation to itself is left out: which side is which is
    not known here)."""
    own = [
        f
        for f in through._meta.fields
        if f.many_to_one and f.related_model is type(instance)._meta.concrete_model
    ]
    others = [
        f for f in through._meta.fields if f.many_to_one and f.related_model is model._meta.concrete_model
    ]
    if len(own) != 1 or len(others) != 1 or own[0] is others[0]:
        return set()
    rows = through._base_manager.filter(**{own[0].name: instance.pk})
    return set(rows.values_list(others[0].attname, flat=True))


def _watching(sender: Any) -> Any:
    """What a change of ``sender`` concerns, or None (nearly every model).
    A broken ``CUSTOMER_SOURCES`` is logged, not raised into the site's
    save (the system checks report it at start-up), unless ``RAISE_ERRORS``."""
    with sync.errors_logged("Could not read AUTUMN['CUSTOMER_SOURCES']; nothing is synced."):
        return sources.registry().watching(sender)
    return None


def _mark(source: CustomerSource, objects: Iterable[Any], using: str) -> None:
    """Mark objects reached through a dependency; they never take over a
    deleted object's row (see :func:`~autumn_django.sync.mark_changed`)."""
    for obj in objects:
        tasks.enqueue_after_commit(sync.mark_changed(obj, using, source=source, take=False), using)


_connected: list[tuple[Any, Any, str]] = []


def connect() -> None:
    """Follow the models the registry names (sources, their dependencies,
    proxies of them), each by its own sender: a model that is not one sends
    its signals to nobody here, so Django's fast delete stays fast for it.
    Connected again when ``AUTUMN`` changes."""
    disconnect()
    try:
        senders = sources.registry().senders()
    except Exception:
        logger.exception(
            "AUTUMN['CUSTOMER_SOURCES'] cannot be used; nothing is synced (manage.py check says why)."
        )
        return
    for sender in senders:
        label = sender._meta.label_lower
        for signal, handler in (
            (post_save, object_saved),
            (pre_delete, object_deleting),
            (post_delete, object_deleted),
            (m2m_changed, relation_changed),
        ):
            uid = f"autumn_django.{handler.__name__}.{label}"
            signal.connect(handler, sender=sender, dispatch_uid=uid)
            _connected.append((signal, sender, uid))


def disconnect() -> None:
    while _connected:
        signal, sender, uid = _connected.pop()
        signal.disconnect(sender=sender, dispatch_uid=uid)


@receiver(setting_changed)
def _reconnect(*, setting: str, **kwargs: Any) -> None:
    if setting in ("AUTUMN", "AUTH_USER_MODEL"):
        connect()
