"""The mirror's admin actions: push the selected rows to Autumn now, retry
the failed ones, or read them back from Autumn. Each needs the change
permission; the admin's action form brings the POST and CSRF checks.

Every action says what it did, including nothing: a count per outcome
("2 customers synced with Autumn: 1 created, 1 unchanged."), each failure
with its error, and why nothing was done when nothing was."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import sync
from ..exceptions import AutumnError
from ..models import Customer
from .helpers import admin_client, describe

#: Failures listed one message each; the rest are counted.
SHOWN_FAILURES = 20


def customers(count: int) -> str:
    return f"{count} customer{'' if count == 1 else 's'}"


@admin.action(description="Sync selected now", permissions=["change"])
def sync_now(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]) -> None:
    _sync(request, list(queryset.values_list("pk", flat=True)))


@admin.action(description="Retry failed", permissions=["change"])
def retry_failed(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]
) -> None:
    selected = queryset.count()
    failed = list(queryset.filter(state=Customer.State.FAILED).values_list("pk", flat=True))
    if not failed:
        messages.info(
            request,
            f"Nothing to retry: none of the {customers(selected)} selected has failed."
            if selected != 1
            else "Nothing to retry: the customer selected has not failed.",
        )
        return
    left = selected - len(failed)
    _sync(request, failed, note=f" The other {customers(left)} selected had not failed." if left else "")


def _sync(request: HttpRequest, pks: list[int], note: str = "") -> None:
    done: Counter[str] = Counter()
    failed: list[str] = []
    client = admin_client()
    for pk in pks:
        try:
            result = sync.sync(pk, client=client)
        except AutumnError as error:  # RAISE_ERRORS on
            failed.append(describe(error))
            continue
        if result.action == sync.Action.FAILED:
            failed.append(f"{result.customer_id}: {result.error}")
        else:
            done[str(result.action)] += 1
    if done:
        outcomes = ", ".join(f"{count} {action}" for action, count in sorted(done.items()))
        messages.success(request, f"{customers(sum(done.values()))} synced with Autumn: {outcomes}.{note}")
    _failures(request, failed, "could not be synced", "" if done else note)


@admin.action(description="Refresh from Autumn", permissions=["change"])
def refresh_from_autumn(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]
) -> None:
    client = admin_client()
    refreshed = 0
    failed: list[str] = []
    for row in queryset:
        try:
            sync.refresh(row, client)
        except AutumnError as error:
            failed.append(f"{row.customer_id}: {describe(error)}")
            continue
        refreshed += 1
    if refreshed:
        messages.success(request, f"{customers(refreshed)} refreshed from Autumn.")
    _failures(request, failed, "could not be refreshed")


def _failures(request: HttpRequest, failed: list[str], what: str, note: str = "") -> None:
    """One message with the count, then each failure's error (the first
    ``SHOWN_FAILURES``; the rest are on their rows)."""
    if not failed:
        return
    more = len(failed) - SHOWN_FAILURES
    rest = f" The first {SHOWN_FAILURES} are below; each row holds its error." if more > 0 else ""
    messages.error(request, f"{customers(len(failed))} {what}.{rest}{note}")
    for line in failed[:SHOWN_FAILURES]:
        messages.error(request, line)
