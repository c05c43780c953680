"""The signals autumn-django sends, for sites to hook, and ``disable_sync``.

The receivers that follow the site's models live in :mod:`autumn_django.receivers`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.dispatch import Signal

#: Sent after Autumn confirmed a change, with ``customer`` (the mirror row,
#: a :class:`~autumn_django.models.Customer`) and ``action`` (a
#: :class:`~autumn_django.sync.Action`: created, updated or deleted).
customer_synced = Signal()

#: Sent after a failed attempt was recorded on the row, with ``customer``
#: (the mirror row, holding ``last_error``) and ``error`` (the exception).
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
    """False inside :func:`disable_sync`."""
    return not _disabled.get()
