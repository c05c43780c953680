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

import datetime
import json
from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince, timeuntil
from django.views.decorators.http import require_POST

from ..models import Customer, RemoteCustomer
from . import actions, views
from .helpers import user_admin_url

#: What a blank value shows, on every page of the app (Django's own is "-").
EMPTY = "—"
#: Characters of a row's last error shown in the list; the whole of it is
#: in the cell's tooltip and on the row's page.
ERROR_CHARS = 90


# --- the mirror -----------------------------------------------------------------


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    """The mirror rows, one per user: read-only, with actions that sync them.

    The list is five columns that fit beside the admin's sidebars at 1280 px
    (the row's error sits under its state, the environment under its id);
    on a phone each row is a card (``static/autumn_django/admin.css``)."""

    list_display = ("customer", "names", "user_link", "state_badge", "synced")
    list_display_links = ("customer",)
    list_filter = ("state", "env")
    list_select_related = ("user",)
    show_full_result_count = False
    empty_value_display = EMPTY
    ordering = ("-updated",)
    # POST with CSRF, change permission: the admin's own checks.
    actions = (actions.sync_now, actions.retry_failed, actions.refresh_from_autumn)
    readonly_fields = (
        "user", "env", "customer_id", "name", "email", "fingerprint", "stripe_id", "metadata",
        "remote_created_at", "state", "last_error", "attempts", "next_attempt_at", "synced_at",
        "payload_hash", "version", "created", "updated", "data_pretty", "in_autumn",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("user", "customer_id", "in_autumn", "env", "state", "last_error")}),
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

    class Media:
        css = {"all": ("autumn_django/admin.css",)}

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        user_model = get_user_model()
        fields = ["customer_id", "email", "name", f"user__{user_model.USERNAME_FIELD}"]
        email_field = user_model.get_email_field_name()
        if f"user__{email_field}" not in fields and hasattr(user_model, email_field):
            fields.append(f"user__{email_field}")
        return tuple(fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from users; a row made by hand would have no user to mirror

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django's "Select ... to change" offers what the rows' pages do not.
        return super().changelist_view(request, {"title": "Autumn customer mirrors", **(extra_context or {})})

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A row is written by the sync engine only: its page is read-only
        for everyone (no Save, a POST to it is refused), while the change
        permission still grants the list's actions, which ask without a row."""
        return obj is None and super().has_change_permission(request)

    @admin.display(description="id", ordering="customer_id")
    def customer(self, row: Customer) -> str:
        return format_html(
            '{}<span class="autumn-quiet autumn-env">{}</span>', row.customer_id, row.get_env_display()
        )

    @admin.display(description="customer", ordering="name")
    def names(self, row: Customer) -> str | None:
        if not row.name and not row.email:
            return None
        return format_html(
            '<span class="autumn-name">{}</span><span class="autumn-quiet autumn-email" title="{}">{}</span>',
            row.name or EMPTY,
            row.email,
            row.email or EMPTY,
        )

    @admin.display(description="user", ordering="user")
    def user_link(self, row: Customer) -> str | None:
        if row.user is None:
            return None
        url = user_admin_url(row.user)
        if url is None:
            return str(row.user)
        return format_html('<a href="{}">{}</a>', url, row.user)

    @admin.display(description="state", ordering="state")
    def state_badge(self, row: Customer) -> str:
        badge = format_html(
            '<span class="autumn-state autumn-state-{}">{}</span>', row.state, row.get_state_display()
        )
        notes = []
        if row.next_attempt_at and row.state != Customer.State.SYNCED:
            notes.append(
                format_html(
                    '<span class="autumn-quiet" title="{}">next try {}</span>',
                    _exact(row.next_attempt_at),
                    _relative(row.next_attempt_at),
                )
            )
        if row.last_error:
            short = (
                row.last_error if len(row.last_error) <= ERROR_CHARS else row.last_error[: ERROR_CHARS - 1]
            )
            notes.append(
                format_html(
                    '<span class="autumn-error" title="{}">{}{}</span>',
                    row.last_error,
                    short,
                    "" if short == row.last_error else "…",
                )
            )
        return format_html("{}{}", badge, format_html_join("", "{}", ((note,) for note in notes)))

    @admin.display(description="last synced", ordering="synced_at")
    def synced(self, row: Customer) -> str:
        if row.synced_at is None:
            return "never"
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            row.synced_at.isoformat(),
            _exact(row.synced_at),
            _relative(row.synced_at),
        )

    @admin.display(description="in Autumn")
    def in_autumn(self, row: Customer) -> str | None:
        url = views.detail_url(row.customer_id)
        if url is None:
            return None
        return format_html('<a href="{}">What Autumn holds now: plans, balances, link or delete</a>', url)

    @admin.display(description="Autumn's last answer")
    def data_pretty(self, row: Customer) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.data, indent=2, sort_keys=True))


def _exact(moment: datetime.datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z}"


def _relative(moment: datetime.datetime) -> str:
    """ "3 minutes ago", "in 5 minutes": a moment as a person says it."""
    now = timezone.now()
    if moment <= now:
        if now - moment < datetime.timedelta(minutes=1):
            return "just now"
        return f"{timesince(moment, now, depth=1)} ago"
    if moment - now < datetime.timedelta(minutes=1):
        return "in under a minute"
    return f"in {timeuntil(moment, now, depth=1)}"


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
