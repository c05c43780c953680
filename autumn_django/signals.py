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

#: Sent for every webhook delivery once it is processed, with ``event`` (a
#: :class:`~autumn_django.models.WebhookEvent`) and ``customer`` (its mirror
#: row, refreshed from Autumn, or None when the site has no row for it).
webhook_received = Signal()

#: Sent for a ``billing.updated`` event (a checkout, an upgrade, a
#: cancellation, a trial ending...), with ``event`` and ``customer`` as above.
billing_updated = Signal()

#: Sent for the legacy ``customer.products.updated`` event (Autumn still
#: sends it beside ``billing.updated``), with ``event`` and ``customer``.
customer_products_updated = Signal()

#: Sent for ``balances.limit_reached``, with ``event`` and ``customer``.
balance_limit_reached = Signal()

#: Sent for ``balances.usage_alert_triggered``, with ``event`` and ``customer``.
usage_alert_triggered = Signal()

#: Sent for ``billing.auto_topup_succeeded`` and ``billing.auto_topup_failed``,
#: with ``event``, ``customer`` and ``succeeded`` (a bool).
auto_topup = Signal()

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
