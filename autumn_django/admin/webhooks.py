"""The webhook events Autumn delivered: what came, what became of it, and
an action to process again (POST with CSRF, change permission)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .. import webhooks
from ..models import WebhookEvent
from .helpers import admin_client


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "type", "customer_id", "state", "attempts", "error_short")
    list_filter = ("state", "type")
    search_fields = ("svix_id", "customer_id", "type")
    date_hierarchy = "received_at"
    ordering = ("-received_at",)
    show_full_result_count = False
    actions = ("process_again",)
    fields = (
        "svix_id", "type", "customer_id", "state", "attempts", "last_error",
        "received_at", "next_attempt_at", "processed_at", "payload_pretty",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # events come from Autumn only

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An event is a record of what Autumn sent: its page is read-only;
        # the permission still guards the action on the list.
        return obj is None and super().has_change_permission(request)

    @admin.display(description="last error")
    def error_short(self, event: WebhookEvent) -> str:
        return event.last_error if len(event.last_error) <= 80 else event.last_error[:79] + "…"

    @admin.display(description="payload")
    def payload_pretty(self, event: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))

    @admin.action(description="Process again", permissions=["change"])
    def process_again(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        client = admin_client()
        done, failed, skipped = 0, 0, 0
        for pk in queryset.values_list("pk", flat=True):
            WebhookEvent.objects.filter(pk=pk, state=WebhookEvent.State.PROCESSED).update(
                state=WebhookEvent.State.PENDING
            )
            event = webhooks.process(pk, client)
            if event is None or event.state == WebhookEvent.State.IGNORED:
                skipped += 1
            elif event.state == WebhookEvent.State.FAILED:
                failed += 1
                messages.error(request, f"{event.svix_id}: {event.last_error}")
            else:
                done += 1
        messages.info(
            request, f"Processed again: {done}; failed: {failed}; ignored (unknown type): {skipped}."
        )
