"""The pages of Autumn's own customer list: list, detail, link (or import)
and delete. Nothing here is read from the database but the mirror rows shown
beside Autumn's answers and their objects (a user, a team: any customer
source's); the data comes from the API on each request.

Each view takes the ``RemoteCustomerAdmin`` first, for its site's context,
its ``opts`` and its permission checks; ``RemoteCustomerAdmin.get_urls``
binds it and wraps the view in ``admin_site.admin_view`` (login, staff).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from .. import mapping, sources, sync
from ..exceptions import AutumnError, MappingError, NotFound
from ..models import Customer, active_plan_ids
from ..sources import CustomerSource, UserSource
from . import pagination
from .helpers import (
    admin_client,
    describe,
    model_label,
    object_admin_url,
    object_html,
    row_model,
    with_objects,
)

PAGE_SIZES = (25, 50, 100, 250, 1000)
#: Bounds on what the query string may ask: a page number past any real
#: list, a search or cursor longer than any real one, a trail of cursors
#: (the pages before this one) deeper than anyone clicks.
MAX_PAGE = 1_000_000
MAX_SEARCH = 200
MAX_CURSOR = 1000
MAX_TRAIL = 100
#: The customer's fields on its page, each with the words it is shown under.
DETAIL_FIELDS = (
    ("id", "Customer id"),
    ("name", "Name"),
    ("email", "Email"),
    ("env", "Environment"),
    ("stripe_id", "Stripe id"),
    ("fingerprint", "Fingerprint"),
    ("send_email_receipts", "Email receipts"),
)
LIST_HEADINGS = ("Customer id", "Customer", "Local object", "Active plans", "Stripe id", "Created")
#: What a blank value shows, as on the mirror's pages.
EMPTY = "—"


def bounded_int(value: str | None, default: int, low: int, high: int) -> int:
    """A whole number from the query string, within [low, high]; the default
    when it is missing or not a short decimal number."""
    if value is None or not value.isdecimal() or len(value) > len(str(high)):
        return default
    return min(max(int(value), low), high)


def detail_url(customer_id: Any) -> str | None:
    """The detail page of a customer, or None for an id the URL cannot carry
    (made outside this site, e.g. holding a slash)."""
    if not isinstance(customer_id, str) or not customer_id:
        return None
    try:
        return reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id])
    except NoReverseMatch:
        return None


def local_time(milliseconds: Any) -> datetime.datetime | None:
    """Autumn's epoch milliseconds as the site's local time."""
    if not isinstance(milliseconds, (int, float)):
        return None
    return timezone.localtime(datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.timezone.utc))


def remote_created(customer: dict[str, Any]) -> datetime.datetime | None:
    return local_time(customer.get("created_at"))


def active_plans(customer: dict[str, Any]) -> list[str]:
    """The plans shown for one of Autumn's customers: the mirror's rule."""
    return active_plan_ids(customer)


def shown(value: Any, *, capitalise: bool = False) -> Any:
    """A field's value as a page shows it: yes or no for a flag, the blank
    mark for nothing, a word capitalised as the mirror's pages show it
    ("Sandbox")."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if value is None or value == "" or value == [] or value == {}:
        return EMPTY
    return value.capitalize() if capitalise and isinstance(value, str) else value


def _context(model_admin: ModelAdmin[Any], request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "has_delete_permission": model_admin.has_delete_permission(request),
        "empty": EMPTY,
        **extra,
    }


def changelist(
    model_admin: ModelAdmin[Any], request: HttpRequest, extra_context: dict[str, Any] | None = None
) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    client = admin_client()
    search = request.GET.get("q", "").strip()[:MAX_SEARCH]
    per_page = bounded_int(request.GET.get("per_page"), 50, 1, max(PAGE_SIZES))
    per_page = per_page if per_page in PAGE_SIZES else 50
    filters: dict[str, Any] = {"search": search} if search else {}
    page: dict[str, Any] = {"list": []}
    links: dict[str, Any] = {}
    try:
        if client.uses_cursor_pagination:
            cursor = request.GET.get("cursor", "")[:MAX_CURSOR]
            trail = [c[:MAX_CURSOR] for c in request.GET.get("trail", "").split(",") if c] if cursor else []
            trail = trail[-MAX_TRAIL:]
            page = client.list_customers(limit=per_page, start_cursor=cursor, **filters)
            links = pagination.cursor_links(request, cursor, trail, page.get("next_cursor"))
        else:
            number = bounded_int(request.GET.get("p"), 1, 1, MAX_PAGE)
            page = client.list_customers(limit=per_page, offset=(number - 1) * per_page, **filters)
            links = pagination.offset_links(request, number, per_page, page.get("total_filtered_count"))
    except AutumnError as error:
        messages.error(request, describe(error))
    customers = page.get("list") or []
    ids = [c["id"] for c in customers if c.get("id")]
    # The page's rows in one query, their objects in one per model.
    rows = {
        row.customer_id: (row, obj)
        for row, obj in with_objects(Customer.objects.filter(env=client.env, customer_id__in=ids))
    }
    entries = []
    for customer in customers:
        row, obj = rows.get(customer.get("id"), (None, None))
        entries.append(
            {
                "customer": customer,
                "created": remote_created(customer),
                "plans": active_plans(customer),
                "row": row,
                "local": object_html(obj, model_label(row_model(row)) if row else None),
                "detail_url": detail_url(customer.get("id")),
            }
        )
    context = _context(
        model_admin,
        request,
        "Autumn customers",
        entries=entries,
        search=search,
        per_page=per_page,
        page_sizes=PAGE_SIZES,
        headings=LIST_HEADINGS,
        pagination=links,
        env=client.env,
        api_version=client.api_version,
        **(extra_context or {}),
    )
    return TemplateResponse(request, "admin/autumn_django/remotecustomer/change_list.html", context)


def detail(model_admin: ModelAdmin[Any], request: HttpRequest, customer_id: str) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    client = admin_client()
    customer: dict[str, Any] | None = None
    try:
        customer = client.get_customer(customer_id, expand=["subscriptions.plan"])
    except AutumnError as error:
        messages.error(request, describe(error))
    row = Customer.objects.filter(env=client.env, customer_id=customer_id).first()
    obj = with_objects([row])[0][1] if row else None
    candidate = None if row else _local_object(customer_id)
    context = _context(
        model_admin,
        request,
        f"Autumn customer {customer_id}",
        customer_id=customer_id,
        customer=customer,
        created=remote_created(customer) if customer else None,
        plans=active_plans(customer) if customer else [],
        raw=json.dumps(customer, indent=2, sort_keys=True) if customer else "",
        fields=[
            (name, label, shown(customer.get(name), capitalise=name == "env"))
            for name, label in DETAIL_FIELDS
        ]
        if customer
        else [],
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
        local_object=obj,
        local_url=object_admin_url(obj),
        local_label=model_label(row_model(row)) if row else None,
        candidate=candidate[0] if candidate else None,
        candidate_described=candidate[1].describe(candidate[0]) if candidate else None,
    )
    return TemplateResponse(request, "admin/autumn_django/remotecustomer/detail.html", context)


def _local_object(customer_id: str) -> tuple[Any, CustomerSource] | None:
    """The local object whose customer id is ``customer_id``, and its source,
    if any, among every registered source: a user by the id as its primary
    key, another source's object by what follows its prefix (``team:3``).
    The object's own mapping must give that very id, so an id that only
    looks like a key (a custom ``CUSTOMER_ID``) links nothing wrong. At most
    one query per source whose keys the id can hold."""
    for source in sources.registry():
        pk = _key_in(source, customer_id)
        if pk is None:
            continue
        obj = next(iter(source.get_queryset().filter(pk=pk).order_by()[:1]), None)
        if obj is None:
            continue
        try:
            if mapping.payload_for(obj, source).customer_id == customer_id:
                return obj, source
        except MappingError:
            continue
    return None


def _key_in(source: CustomerSource, customer_id: str) -> Any:
    """The primary key of ``source``'s model that ``customer_id`` holds by
    the default ids (the key for users, ``<prefix>:<key>`` for the others),
    or None when it holds none (not that prefix, not a valid key)."""
    if isinstance(source, UserSource):
        text = customer_id
    elif customer_id.startswith(f"{source.prefix}:"):
        text = customer_id[len(source.prefix) + 1 :]
    else:
        return None
    try:
        return source.model_class._meta.pk.to_python(text)
    except (ValidationError, ValueError, TypeError):
        return None


def link(model_admin: ModelAdmin[Any], request: HttpRequest, customer_id: str) -> HttpResponse:
    """Link or import: a mirror row for the local object this customer
    belongs to (a user, a team), holding what Autumn has. POST only
    (``get_urls`` wraps it in ``require_POST``).

    The object is the row's own when a row already holds the id (Refresh
    mirror from Autumn), else the one :func:`_local_object` finds."""
    if not model_admin.has_view_permission(request) or not request.user.has_perm(
        "autumn_django.change_customer"
    ):
        raise PermissionDenied
    detail_url = reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id])
    client = admin_client()
    row = Customer.objects.filter(env=client.env, customer_id=customer_id).first()
    obj = with_objects([row])[0][1] if row else None
    source = sources.registry().for_model(type(obj)) if obj is not None else None
    found = (obj, source) if obj is not None and source is not None else _local_object(customer_id)
    if found is None:
        messages.error(request, f"No local object has the customer id {customer_id}.")
        return HttpResponseRedirect(detail_url)
    obj, source = found
    try:
        remote = client.get_customer(customer_id)
    except AutumnError as error:
        messages.error(request, describe(error))
        return HttpResponseRedirect(detail_url)
    what = f"{source.describe(obj)} ({obj})"
    try:
        with transaction.atomic():
            row, created = sync.link(obj, remote)
    except IntegrityError:
        # The row of a deleted object still holds the id, waiting for Autumn
        # to confirm its delete: linking must not take it over silently.
        messages.error(
            request,
            f"{customer_id} was not linked to {what}: the mirror row of a deleted object still "
            "holds it, waiting for Autumn to confirm the delete. Sync that row, then link again.",
        )
        return HttpResponseRedirect(detail_url)
    messages.success(request, f"{'Linked' if created else 'Refreshed'} {customer_id} to {what}.")
    return HttpResponseRedirect(detail_url)


def delete(model_admin: ModelAdmin[Any], request: HttpRequest, customer_id: str) -> HttpResponse:
    """A confirmation page on GET; the deletion in Autumn (and of the mirror
    row) only on POST, which the admin's CSRF protection covers."""
    if not model_admin.has_delete_permission(request):
        raise PermissionDenied
    if request.method != "POST":
        context = _context(model_admin, request, f"Delete {customer_id} in Autumn?", customer_id=customer_id)
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
        return HttpResponseRedirect(reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id]))
    Customer.objects.filter(env=client.env, customer_id=customer_id).delete()
    messages.success(request, f"Deleted {customer_id} in Autumn.")
    return HttpResponseRedirect(reverse("admin:autumn_django_remotecustomer_changelist"))
