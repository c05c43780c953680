"""The mirror's admin actions: push the selected rows to Autumn now, retry
the failed ones, or read them back from Autumn. Each needs the change
permission; the admin's action form brings the POST and CSRF checks."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import sync
from ..exceptions import AutumnError
from ..models import Customer
from .helpers import admin_client, describe


@admin.action(description="Sync selected now", permissions=["change"])
def sync_now(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]) -> None:
    _sync(request, queryset)


@admin.action(description="Retry failed", permissions=["change"])
def retry_failed(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]
) -> None:
    _sync(request, queryset.filter(state=Customer.State.FAILED))


def _sync(request: HttpRequest, queryset: QuerySet[Customer]) -> None:
    done, failed = 0, []
    client = admin_client()
    for pk in queryset.values_list("pk", flat=True):
        try:
            result = sync.sync(pk, client=client)
        except AutumnError as error:  # RAISE_ERRORS on
            failed.append(describe(error))
            continue
        if result.action == sync.Action.FAILED:
            failed.append(f"{result.customer_id}: {result.error}")
        else:
            done += 1
    if done:
        messages.success(request, f"{done} customer(s) synced with Autumn.")
    for line in failed[:20]:
        messages.error(request, line)


@admin.action(description="Refresh from Autumn", permissions=["change"])
def refresh_from_autumn(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Customer]
) -> None:
    client = admin_client()
    refreshed = 0
    for row in queryset:
        try:
            sync.refresh(row, client)
        except AutumnError as error:
            messages.error(request, f"{row.customer_id}: {describe(error)}")
            continue
        refreshed += 1
    if refreshed:
        messages.success(request, f"{refreshed} customer(s) refreshed from Autumn.")
