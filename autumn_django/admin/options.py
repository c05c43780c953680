"""Two admin pages: the mirror (``Customer``), and Autumn's own customer list.

The remote list is an unmanaged model registered in the admin, whose views
are replaced (``changelist_view`` and ``get_urls``) by pages drawn from the
API, as django-rq does for its queues. That way it sits in the admin's index
and app list like any model, and Django creates its permissions, so "may
browse Autumn's customers" and "may delete them" are grants like any other.

The ModelAdmins here only wire: URLs, permissions, columns, fieldsets and
actions. The remote pages are in ``views``, the actions in ``actions``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from ..models import Customer, RemoteCustomer
from . import actions, views
from .helpers import user_admin_url

STATE_COLOURS = {
    Customer.State.SYNCED: "#2e7d32",
    Customer.State.PENDING: "#8d6e00",
    Customer.State.FAILED: "#c62828",
    Customer.State.DELETING: "#6a1b9a",
    Customer.State.GONE: "#555",
}


# --- the mirror -----------------------------------------------------------------


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "customer_id",
        "user_link",
        "email",
        "name",
        "env",
        "state_badge",
        "synced_at",
        "error_short",
    )
    list_filter = ("state", "env")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    show_full_result_count = False
    ordering = ("-updated",)
    # POST with CSRF, change permission: the admin's own checks.
    actions = (actions.sync_now, actions.retry_failed, actions.refresh_from_autumn)
    readonly_fields = (
        "env", "customer_id", "name", "email", "fingerprint", "stripe_id", "metadata", "remote_created_at",
        "state", "last_error", "attempts", "next_attempt_at", "synced_at", "payload_hash", "version",
        "created", "updated", "data_pretty",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("user", "customer_id", "env", "state", "last_error")}),
        (
            "At Autumn",
            {"fields": ("name", "email", "fingerprint", "stripe_id", "metadata", "remote_created_at")},
        ),
        (
            "Sync",
            {
                "fields": (
                    "attempts",
                    "next_attempt_at",
                    "synced_at",
                    "payload_hash",
                    "version",
                    "created",
                    "updated",
                )
            },
        ),
        ("Autumn's last answer", {"fields": ("data_pretty",), "classes": ("collapse",)}),
    )

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        user_model = get_user_model()
        fields = ["customer_id", "email", "name", f"user__{user_model.USERNAME_FIELD}"]
        email_field = user_model.get_email_field_name()
        if f"user__{email_field}" not in fields and hasattr(user_model, email_field):
            fields.append(f"user__{email_field}")
        return tuple(fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from users; a row made by hand would have no user to mirror

    @admin.display(description="user", ordering="user")
    def user_link(self, row: Customer) -> str:
        url = user_admin_url(row.user)
        if url is None:
            return str(row.user or "—")
        return format_html('<a href="{}">{}</a>', url, row.user)

    @admin.display(description="state", ordering="state")
    def state_badge(self, row: Customer) -> str:
        return format_html(
            '<span style="color:#fff;background:{};padding:2px 8px;border-radius:8px">{}</span>',
            STATE_COLOURS.get(row.state, "#555"),
            row.get_state_display(),
        )

    @admin.display(description="last error")
    def error_short(self, row: Customer) -> str:
        return row.last_error if len(row.last_error) <= 80 else row.last_error[:79] + "…"

    @admin.display(description="Autumn's last answer")
    def data_pretty(self, row: Customer) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.data, indent=2, sort_keys=True))


# --- Autumn's own list -------------------------------------------------------------


@admin.register(RemoteCustomer)
class RemoteCustomerAdmin(admin.ModelAdmin):
    """Browse, look into, link and delete the customers Autumn holds."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name=f"{name}_changelist"),
            path("<str:customer_id>/", wrap(self._bind(views.detail)), name=f"{name}_detail"),
            path("<str:customer_id>/link/", wrap(require_POST(self._bind(views.link))), name=f"{name}_link"),
            path("<str:customer_id>/delete/", wrap(self._bind(views.delete)), name=f"{name}_delete"),
        ]

    def _bind(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        """``view`` with this ModelAdmin as its first argument, under the view's own name."""
        return update_wrapper(partial(view, self), view)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return views.changelist(self, request, extra_context)
