"""Two admin pages: the mirror (``Customer``), and Autumn's own customer list.

The remote list is an unmanaged model registered in the admin, whose views
are replaced (``changelist_view`` and ``get_urls``) by pages drawn from the
API, as django-rq does for its queues. That way it sits in the admin's index
and app list like any model, and Django creates its permissions, so "may
browse Autumn's customers" and "may delete them" are grants like any other.
"""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from . import conf, mapping, sync
from .client import AutumnClient, get_client
from .exceptions import AutumnAPIError, AutumnError, NotFound
from .models import Customer, RemoteCustomer

STATE_COLOURS = {
    Customer.State.SYNCED: "#2e7d32",
    Customer.State.PENDING: "#8d6e00",
    Customer.State.FAILED: "#c62828",
    Customer.State.DELETING: "#6a1b9a",
}
PAGE_SIZES = (25, 50, 100, 250, 1000)


def admin_client() -> AutumnClient:
    """A client with short timeouts and one retry: a slow Autumn must not
    hang an admin page (``AUTUMN["ADMIN_TIMEOUT"]``)."""
    return get_client(timeout=conf.normalize_timeout(conf.get("ADMIN_TIMEOUT")), max_retries=1)


def describe(error: AutumnError) -> str:
    """An error for a page: Autumn's code and message (never the key)."""
    if isinstance(error, AutumnAPIError):
        status = f"HTTP {error.status} " if error.status else ""
        return f"Autumn answered {status}{error.code}: {error.message}"
    return f"Autumn could not be reached: {error}"


def user_admin_url(user: Any) -> str | None:
    """The user's change page in the admin, if the user model is registered."""
    if user is None:
        return None
    try:
        return reverse(f"admin:{user._meta.app_label}_{user._meta.model_name}_change", args=[user.pk])
    except NoReverseMatch:
        return None


def local_time(milliseconds: Any) -> datetime.datetime | None:
    """Autumn's epoch milliseconds as the site's local time."""
    if not isinstance(milliseconds, (int, float)):
        return None
    return timezone.localtime(datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.timezone.utc))


def remote_created(customer: dict[str, Any]) -> datetime.datetime | None:
    return local_time(customer.get("created_at"))


DETAIL_FIELDS = ("id", "name", "email", "fingerprint", "stripe_id", "env", "send_email_receipts")
LIST_HEADINGS = ("Customer id", "Name", "Email", "Env", "Created", "Stripe id", "Active plans", "Local user")


def active_plans(customer: dict[str, Any]) -> list[str]:
    return [
        sub.get("plan_id", "") for sub in customer.get("subscriptions") or [] if sub.get("status") == "active"
    ]


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
    actions = ("sync_now", "retry_failed", "refresh_from_autumn")
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

    # --- actions (POST with CSRF, change permission: the admin's own checks) ---

    @admin.action(description="Sync selected now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        self._sync(request, queryset)

    @admin.action(description="Retry failed", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        self._sync(request, queryset.filter(state=Customer.State.FAILED))

    def _sync(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        done, failed = 0, []
        client = admin_client()
        for pk in queryset.values_list("pk", flat=True):
            try:
                result = sync.sync(pk, client=client)
            except AutumnError as error:  # RAISE_ERRORS on
                failed.append(describe(error))
                continue
            if result.action == sync.FAILED:
                failed.append(f"{result.customer_id}: {result.error}")
            else:
                done += 1
        if done:
            messages.success(request, f"{done} customer(s) synced with Autumn.")
        for line in failed[:20]:
            messages.error(request, line)

    @admin.action(description="Refresh from Autumn", permissions=["change"])
    def refresh_from_autumn(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        client = admin_client()
        refreshed = 0
        for row in queryset:
            try:
                remote = client.get_customer(row.customer_id)
            except AutumnError as error:
                messages.error(request, f"{row.customer_id}: {describe(error)}")
                continue
            sync.store_remote(row.pk, remote)
            refreshed += 1
        if refreshed:
            messages.success(request, f"{refreshed} customer(s) refreshed from Autumn.")


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
            path("<str:customer_id>/", wrap(self.detail_view), name=f"{name}_detail"),
            path("<str:customer_id>/link/", wrap(require_POST(self.link_view)), name=f"{name}_link"),
            path("<str:customer_id>/delete/", wrap(self.delete_remote_view), name=f"{name}_delete"),
        ]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "has_delete_permission": self.has_delete_permission(request),
            **extra,
        }

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        client = admin_client()
        search = request.GET.get("q", "").strip()
        try:
            per_page = int(request.GET.get("per_page", 50))
        except ValueError:
            per_page = 50
        per_page = per_page if per_page in PAGE_SIZES else 50
        filters: dict[str, Any] = {"search": search} if search else {}
        page: dict[str, Any] = {"list": []}
        pagination: dict[str, Any] = {}
        try:
            if client.uses_cursor_pagination:
                cursor = request.GET.get("cursor", "")
                trail = [c for c in request.GET.get("trail", "").split(",") if c] if cursor else []
                page = client.list_customers(limit=per_page, start_cursor=cursor, **filters)
                pagination = self._cursor_links(request, cursor, trail, page.get("next_cursor"))
            else:
                try:
                    number = max(1, int(request.GET.get("p", 1)))
                except ValueError:
                    number = 1
                page = client.list_customers(limit=per_page, offset=(number - 1) * per_page, **filters)
                pagination = self._offset_links(request, number, per_page, page.get("total_filtered_count"))
        except AutumnError as error:
            messages.error(request, describe(error))
        customers = page.get("list") or []
        ids = [c["id"] for c in customers if c.get("id")]
        rows = {
            row.customer_id: row
            for row in Customer.objects.filter(env=client.env, customer_id__in=ids).select_related("user")
        }
        entries = [
            {
                "customer": customer,
                "created": remote_created(customer),
                "plans": active_plans(customer),
                "row": rows.get(customer.get("id")),
                "user_url": user_admin_url(getattr(rows.get(customer.get("id")), "user", None)),
            }
            for customer in customers
        ]
        context = self._context(
            request,
            "Autumn customers",
            entries=entries,
            search=search,
            per_page=per_page,
            page_sizes=PAGE_SIZES,
            headings=LIST_HEADINGS,
            pagination=pagination,
            env=client.env,
            api_version=client.api_version,
            **(extra_context or {}),
        )
        return TemplateResponse(request, "admin/autumn_django/remotecustomer/change_list.html", context)

    def _query(self, request: HttpRequest, **changes: Any) -> str:
        params = {key: value for key, value in request.GET.items()}
        params.update({key: value for key, value in changes.items()})
        return "?" + urlencode({key: value for key, value in params.items() if value not in ("", None)})

    def _offset_links(
        self, request: HttpRequest, number: int, per_page: int, total: int | None
    ) -> dict[str, Any]:
        pages = max(1, -(-(total or 0) // per_page))
        shown = sorted({1, pages, *range(max(1, number - 2), min(pages, number + 2) + 1)})
        return {
            "style": "offset",
            "number": number,
            "pages": pages,
            "total": total,
            "links": [(n, self._query(request, p=n)) for n in shown],
            "previous": self._query(request, p=number - 1) if number > 1 else None,
            "next": self._query(request, p=number + 1) if number < pages else None,
        }

    def _cursor_links(
        self, request: HttpRequest, cursor: str, trail: list[str], next_cursor: str | None
    ) -> dict[str, Any]:
        # The cursors of the pages before this one ride in the query string
        # ("trail"), so Back works without any state on the server.
        previous = None
        if cursor:
            back = trail[:-1]
            previous = self._query(request, cursor=trail[-1] if trail else "", trail=",".join(back))
            if not trail:
                previous = self._query(request, cursor="", trail="")
        forward = None
        if next_cursor:
            forward = self._query(
                request, cursor=next_cursor, trail=",".join([*trail, cursor] if cursor else [])
            )
        return {
            "style": "cursor",
            "previous": previous,
            "next": forward,
            "depth": len(trail) + (1 if cursor else 0),
        }

    def detail_view(self, request: HttpRequest, customer_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        client = admin_client()
        customer: dict[str, Any] | None = None
        try:
            customer = client.get_customer(customer_id, expand=["subscriptions.plan"])
        except AutumnError as error:
            messages.error(request, describe(error))
        row = Customer.objects.filter(env=client.env, customer_id=customer_id).select_related("user").first()
        context = self._context(
            request,
            f"Autumn customer {customer_id}",
            customer_id=customer_id,
            customer=customer,
            created=remote_created(customer) if customer else None,
            plans=active_plans(customer) if customer else [],
            raw=json.dumps(customer, indent=2, sort_keys=True) if customer else "",
            fields=[(name, customer.get(name)) for name in DETAIL_FIELDS] if customer else [],
            subscriptions=[
                {
                    "plan": (sub.get("plan") or {}).get("name") or sub.get("plan_id"),
                    "status": sub.get("status"),
                    "started": local_time(sub.get("started_at")),
                    "period_end": local_time(sub.get("current_period_end")),
                }
                for sub in (customer or {}).get("subscriptions") or []
            ],
            row=row,
            user_url=user_admin_url(row.user if row else None),
            candidate=None if row else self._local_user(customer_id),
        )
        return TemplateResponse(request, "admin/autumn_django/remotecustomer/detail.html", context)

    def _local_user(self, customer_id: str) -> Any:
        """The local user whose CUSTOMER_ID is ``customer_id``, if any: tried
        by primary key and by the pk the default mapping puts in metadata."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.filter(pk=user_model._meta.pk.to_python(customer_id)).first()
        except Exception:  # not a valid pk for this model
            user = None
        if user is None:
            return None
        try:
            return user if mapping.payload_for(user).customer_id == customer_id else None
        except mapping.MappingError:
            return None

    def link_view(self, request: HttpRequest, customer_id: str) -> HttpResponse:
        """Link or import: a mirror row for the local user this customer
        belongs to, holding what Autumn has."""
        if not self.has_view_permission(request) or not request.user.has_perm(
            "autumn_django.change_customer"
        ):
            raise PermissionDenied
        detail = reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id])
        client = admin_client()
        user = self._local_user(customer_id)
        if user is None:
            messages.error(request, f"No local user has the customer id {customer_id}.")
            return HttpResponseRedirect(detail)
        try:
            remote = client.get_customer(customer_id)
        except AutumnError as error:
            messages.error(request, describe(error))
            return HttpResponseRedirect(detail)
        values = {**Customer.remote_columns(remote), "state": Customer.State.SYNCED, "payload_hash": ""}
        row, created = Customer.objects.update_or_create(user=user, defaults=values)
        messages.success(request, f"{'Linked' if created else 'Refreshed'} {customer_id} to user {user}.")
        return HttpResponseRedirect(detail)

    def delete_remote_view(self, request: HttpRequest, customer_id: str) -> HttpResponse:
        if not self.has_delete_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            context = self._context(request, f"Delete {customer_id} in Autumn?", customer_id=customer_id)
            return TemplateResponse(
                request, "admin/autumn_django/remotecustomer/delete_confirmation.html", context
            )
        client = admin_client()
        try:
            client.delete_customer(customer_id)
        except NotFound:
            pass  # already gone
        except AutumnError as error:
            messages.error(request, describe(error))
            return HttpResponseRedirect(
                reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id])
            )
        Customer.objects.filter(env=client.env, customer_id=customer_id).delete()
        messages.success(request, f"Deleted {customer_id} in Autumn.")
        return HttpResponseRedirect(reverse("admin:autumn_django_remotecustomer_changelist"))
