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
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import smart_split, unescape_string_literal
from django.utils.timesince import timesince, timeuntil
from django.views.decorators.http import require_POST

from .. import sources
from ..models import Customer, CustomerFeature, CustomerPlan, RemoteCustomer
from . import actions, views
from .helpers import billing_rows, model_label, object_html, row_model, with_objects

#: What a blank value shows, on every page of the app (Django's own is "-").
EMPTY = "—"
#: Characters of a row's last error shown in the list; the whole of it is
#: in the cell's tooltip and on the row's page.
ERROR_CHARS = 90
#: The most users a search of the mirror looks up by username or email: the
#: rows are found by their users' keys, which cannot be joined (see
#: ``CustomerAdmin.get_search_results``), so a term that matches more users
#: finds the rows of the first ones (by key).
SEARCH_USERS = 500
#: The most plan ids the "plan" filter offers (the first, by id): a site has
#: a handful; the bound keeps a page from listing thousands should Autumn
#: ever hold that many. A link to one past it still filters.
PLAN_CHOICES = 100
#: The status of a subscription (or a held purchase) the customer has now.
ACTIVE = "active"


# --- the mirror -----------------------------------------------------------------


class ModelFilter(admin.SimpleListFilter):
    """The rows of one model's objects (users, teams...): one choice per
    registered customer source, named as the pages name the model."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            (source.label, model_label(source.model_class) or source.label) for source in sources.registry()
        ]

    def has_output(self) -> bool:
        return len(self.lookup_choices) > 1  # users alone: a filter with one choice filters nothing

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        label = self.value()
        if not label:
            return queryset
        try:
            source = sources.registry().get(label)
        except LookupError:
            return queryset.none()  # an old link to a source no longer registered
        return queryset.filter(content_type=ContentType.objects.get_for_model(source.model_class))


class PlanFilter(admin.SimpleListFilter):
    """The rows of the customers who have a plan now: one choice per plan id
    that some customer has active. Read from the plan table
    (:class:`~autumn_django.models.CustomerPlan`), which is there to be
    queried: one query for the choices, a subquery for the rows."""

    title = "plan"
    parameter_name = "plan"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        plan_ids = (
            CustomerPlan.objects.filter(status=ACTIVE)
            .order_by("plan_id")
            .values_list("plan_id", flat=True)
            .distinct()[:PLAN_CHOICES]
        )
        return [(plan_id, plan_id) for plan_id in plan_ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        """The rows with an active ``plans__plan_id``, each once: a
        subquery rather than a join, so a customer holding the plan twice (a
        subscription and a purchase) is one row with no DISTINCT over the
        rows' JSON, and the search can still add its users' rows (``|``)."""
        plan_id = self.value()
        if not plan_id:
            return queryset
        holders = CustomerPlan.objects.filter(plan_id=plan_id, status=ACTIVE).values("customer_id")
        return queryset.filter(pk__in=holders)


class MirrorChangeList(ChangeList):
    """The admin's list, with the page's objects read in one query per
    model: the generic link cannot be ``select_related``, and the "object"
    column would otherwise read them one row at a time."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluating the page's queryset fills its cache: the rows the
        # template draws are these, with their objects attached.
        with_objects(self.result_list)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    """The mirror rows, one per object billed (a user, a team: any customer
    source's): read-only, with actions that sync them.

    The list is six columns that fit beside the admin's sidebars at 1280 px
    (the row's error sits under its state, the environment under its id,
    the object's model under it); on a phone each row is a card
    (``static/autumn_django/admin.css``)."""

    list_display = ("customer", "names", "object_link", "active_plans", "state_badge", "synced")
    list_display_links = ("customer",)
    list_filter = ("state", "env", ModelFilter, PlanFilter)
    show_full_result_count = False
    empty_value_display = EMPTY
    ordering = ("-updated",)
    # POST with CSRF, change permission: the admin's own checks.
    actions = (actions.sync_now, actions.retry_failed, actions.refresh_from_autumn)
    readonly_fields = (
        "source_model", "source_object", "env", "customer_id", "name", "email", "fingerprint",
        "stripe_id", "metadata", "remote_created_at", "state", "last_error", "attempts",
        "next_attempt_at", "synced_at", "payload_hash", "version", "created", "updated", "data_pretty",
        "in_autumn", "plans_table", "features_table",
    )  # fmt: skip
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "source_model",
                    "source_object",
                    "customer_id",
                    "in_autumn",
                    "env",
                    "state",
                    "last_error",
                )
            },
        ),
        (
            "At Autumn",
            {"fields": ("name", "email", "fingerprint", "stripe_id", "metadata", "remote_created_at")},
        ),
        # Each a table across the fieldset, its label hidden (the heading names it).
        ("Subscriptions and purchases", {"fields": ("plans_table",), "classes": ("autumn-billing",)}),
        ("Balances and flags", {"fields": ("features_table",), "classes": ("autumn-billing",)}),
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

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MirrorChangeList

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Customer | None:
        """The row, with its object read through its source (or its model's
        manager), so a row whose model is gone from the site shows a blank
        rather than a 500."""
        row = super().get_object(request, object_id, from_field)
        if row is not None:
            with_objects([row])
        return row

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return ("customer_id", "email", "name", "object_id")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Customer], search_term: str
    ) -> tuple[QuerySet[Customer], bool]:
        """The admin's search on the row's own columns, and the rows of the
        users whose username or email matches every word: the generic link
        cannot join the user table, so those users' keys are read first (at
        most ``SEARCH_USERS`` of them) and their rows added. ``queryset``
        has the list's filters already; the added rows keep them."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        users = self._users_matching(search_term)
        if users is None:
            return found, duplicates
        model, keys = users
        if not keys:
            return found, duplicates
        of_users = queryset.filter(
            content_type=ContentType.objects.get_for_model(model), object_id__in=[str(key) for key in keys]
        )
        return found | of_users, duplicates

    def _users_matching(self, search_term: str) -> tuple[Any, list[Any]] | None:
        """The user model and the keys of its first users whose username or
        email holds every word of the term; None when there is no term or
        users are not customers here."""
        user_model = get_user_model()
        if not search_term.strip() or sources.registry().for_model(user_model) is None:
            return None
        fields = [user_model.USERNAME_FIELD]
        email_field = user_model.get_email_field_name()
        if email_field not in fields and hasattr(user_model, email_field):
            fields.append(email_field)
        every_word = Q()
        for bit in smart_split(search_term):
            if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
                bit = unescape_string_literal(bit)
            any_field = Q()
            for field in fields:
                any_field |= Q(**{f"{field}__icontains": bit})
            every_word &= any_field
        keys = user_model._default_manager.filter(every_word).order_by("pk").values_list("pk", flat=True)
        return user_model, list(keys[:SEARCH_USERS])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from their objects; a row made by hand would have nothing to mirror

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

    @admin.display(description="object")
    def object_link(self, row: Customer) -> str | None:
        """The row's object (read with the page's others, see
        ``MirrorChangeList``), linked to its change page when its model is
        in the admin, its model under it; blank once the object is gone."""
        return object_html(row.source, model_label(row_model(row)))

    @admin.display(description="plans")
    def active_plans(self, row: Customer) -> str | None:
        """The plans the customer has now, from Autumn's last answer, which
        the list reads anyway (``data``): no query for the column."""
        plan_ids = row.active_plan_ids
        if not plan_ids:
            return None
        return format_html_join(
            " ", '<span class="autumn-plan">{}</span>', ((plan_id,) for plan_id in plan_ids)
        )

    @admin.display(description="model")
    def source_model(self, row: Customer) -> str | None:
        return model_label(row_model(row))

    @admin.display(description="object")
    def source_object(self, row: Customer) -> str | None:
        return object_html(row.source, None)

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

    @admin.display(description="subscriptions and purchases")
    def plans_table(self, row: Customer) -> str:
        """The customer's subscriptions and purchases as Autumn last said,
        the active ones first, subscriptions before purchases: what was
        canceled and when it ends, a trial's end, a payment past due. Read
        from ``data``, as the JSON below it."""
        plans, _ = billing_rows(row)
        plans.sort(
            key=lambda plan: (
                plan.status != ACTIVE,
                plan.kind != CustomerPlan.Kind.SUBSCRIPTION,
                plan.plan_id,
            )
        )
        body = format_html_join("", "{}", ((_plan_row(plan),) for plan in plans))
        return _table(
            "autumn-plans",
            ("Plan", "Status", "Current period", "Trial ends", "Canceled", "Expires"),
            body,
            "No subscriptions or purchases.",
        )

    @admin.display(description="balances and flags")
    def features_table(self, row: Customer) -> str:
        """The customer's balances (granted, used, left, next reset) and
        flags, as Autumn last said."""
        _, features = billing_rows(row)
        features.sort(key=lambda feature: (feature.kind, feature.feature_id))
        body = format_html_join("", "{}", ((_feature_row(feature),) for feature in features))
        return _table(
            "autumn-features",
            ("Feature", "Granted", "Used", "Remaining", "Next reset", "Expires"),
            body,
            "No balances or flags.",
        )

    @admin.display(description="Autumn's last answer")
    def data_pretty(self, row: Customer) -> str:
        return format_html("<pre>{}</pre>", json.dumps(row.data, indent=2, sort_keys=True))


def _table(css_class: str, headings: tuple[str, ...], body: str, none: str) -> str:
    """A read-only table of the change page; on a phone each row a card, its
    cells labelled by ``data-label`` (``admin.css``)."""
    if not body:
        body = format_html('<tr><td colspan="{}">{}</td></tr>', len(headings), none)
    return format_html(
        '<table class="autumn-table {}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        css_class,
        format_html_join("", '<th scope="col">{}</th>', ((heading,) for heading in headings)),
        body,
    )


def _cells(cells: list[tuple[str, Any]]) -> str:
    """``(label, content)`` as cells; a blank one is the blank mark, left
    out of a phone's card (``autumn-blank``)."""
    return format_html_join(
        "",
        '<td data-label="{}"{}>{}</td>',
        (
            (
                label,
                mark_safe(' class="autumn-blank"') if content is None else "",
                EMPTY if content is None else content,
            )
            for label, content in cells
        ),
    )


def _plan_row(plan: CustomerPlan) -> str:
    kind = plan.get_kind_display().lower()
    if plan.quantity is not None and plan.quantity != 1:
        kind = f"{kind} ×{_number(plan.quantity)}"
    status = format_html(
        '<span class="autumn-state autumn-plan-{}">{}</span>',
        plan.status or "none",
        plan.status.capitalize() or EMPTY,
    )
    if plan.past_due:
        status = format_html(
            '<span>{} <span class="autumn-state autumn-past-due">Past due</span></span>', status
        )
    period = None
    if plan.current_period_start or plan.current_period_end:
        # One element: a phone's card sets it apart from its label as a whole.
        period = format_html(
            "<span>{} – {}</span>", _day(plan.current_period_start), _day(plan.current_period_end)
        )
    return format_html(
        '<tr class="autumn-{}">{}</tr>',
        plan.kind,
        _cells(
            [
                ("Plan", format_html('{}<span class="autumn-quiet">{}</span>', plan.plan_id, kind)),
                ("Status", status),
                ("Current period", period),
                ("Trial ends", _day_or_none(plan.trial_ends_at)),
                ("Canceled", _day_or_none(plan.canceled_at)),
                ("Expires", _day_or_none(plan.expires_at)),
            ]
        ),
    )


def _feature_row(feature: CustomerFeature) -> str:
    if feature.kind == CustomerFeature.Kind.FLAG:
        kind = f"flag, from {feature.plan_id}" if feature.plan_id else "flag"
        remaining = None
    else:
        kind = "balance"
        remaining = "unlimited" if feature.unlimited else _number_or_none(feature.remaining)
    return format_html(
        '<tr class="autumn-{}">{}</tr>',
        feature.kind,
        _cells(
            [
                ("Feature", format_html('{}<span class="autumn-quiet">{}</span>', feature.feature_id, kind)),
                ("Granted", _number_or_none(feature.granted)),
                ("Used", _number_or_none(feature.usage)),
                ("Remaining", remaining),
                ("Next reset", _day_or_none(feature.next_reset_at)),
                ("Expires", _day_or_none(feature.expires_at)),
            ]
        ),
    )


def _number(value: float) -> str:
    """100.0 as "100", 2.5 as "2.5": Autumn's counts are stored as floats
    (a quantity may be an int); a huge one in exponent form, not 300 digits."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


def _number_or_none(value: float | None) -> str | None:
    return None if value is None else _number(value)


def _day(moment: datetime.datetime | None) -> str:
    """A moment as its local day, the exact time in its tooltip: a table of
    dates stays narrow enough for the change page beside the sidebar."""
    if moment is None:
        return EMPTY
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        _exact(moment),
        f"{timezone.localtime(moment):%Y-%m-%d}",
    )


def _day_or_none(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else _day(moment)


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
