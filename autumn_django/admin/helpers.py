"""What the ModelAdmins, their actions and the remote pages all need: the
admin's own Autumn client, an error put into words for a page, and a mirror
row's object (a user, a team: any customer source's) read, named and linked
to its own change page."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from .. import billing, conf, sources, sync
from ..client import AutumnClient, get_client
from ..exceptions import AutumnAPIError, AutumnError
from ..models import Customer, CustomerFeature, CustomerPlan


def admin_client() -> AutumnClient:
    """A client with short timeouts and one retry: a slow Autumn must not
    hang an admin page. ``AUTUMN["ADMIN_TIMEOUT"]`` is (connect, read) for
    each attempt, and their sum the deadline of the whole operation, retry,
    ``Retry-After`` wait and a drip-fed answer included."""
    timeout = conf.load().admin_timeout
    return get_client(timeout=timeout, max_retries=1, deadline=sum(timeout))


def describe(error: AutumnError) -> str:
    """An error for a page: Autumn's code and message (never the key)."""
    if isinstance(error, AutumnAPIError):
        status = f"HTTP {error.status} " if error.status else ""
        return f"Autumn answered {status}{error.code}: {error.message}"
    return f"Autumn could not be reached: {error}"


def object_admin_url(obj: Any) -> str | None:
    """The object's change page in the admin (a user's, a team's), if its
    model is registered there: a model the site keeps out of the admin is
    named without a link rather than breaking the page."""
    if obj is None:
        return None
    try:
        return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[quote(obj.pk)])
    except NoReverseMatch:
        return None


def user_admin_url(user: Any) -> str | None:
    """The user's change page: :func:`object_admin_url`'s name from before
    any model but the user could be a customer, kept for code importing it."""
    return object_admin_url(user)


def model_label(model: type[models.Model] | None) -> str | None:
    """A model as the pages name it: "user" for the user model, as messages
    say "user 5" (whatever a custom user model calls itself), else its
    verbose name ("team")."""
    if model is None:
        return None
    if model is get_user_model():
        return "user"
    return str(model._meta.verbose_name)


def row_model(row: Customer) -> type[models.Model] | None:
    """The model of a row's object, also for a row whose object is gone."""
    return row_model_of(row.content_type_id)


def row_model_of(content_type_id: int | None) -> type[models.Model] | None:
    """The model of a content type, from the content types' cache (no query
    once warm); None for a model no longer installed."""
    if content_type_id is None:
        return None
    try:
        return ContentType.objects.get_for_id(content_type_id).model_class()
    except ContentType.DoesNotExist:
        return None


def with_objects(rows: Iterable[Customer]) -> list[tuple[Customer, Any]]:
    """``rows`` with their objects, read in one query per model, each object
    also cached on its row (``row.source`` and ``row.user`` then cost no
    query). The generic link cannot be ``select_related``: a page of rows
    would otherwise read its objects one by one.

    A row whose model is no longer a registered source still finds its
    object, through the model's own manager, so the admin shows what a row
    points at whatever the settings say now. None for an object that is
    gone."""
    found = sync.with_sources(list(rows))
    registry = sources.registry()
    unregistered: dict[int, list[str]] = {}
    for row, obj in found:
        if obj is None and row.object_id is not None and row.content_type_id is not None:
            if registry.for_content_type_id(row.content_type_id) is None:
                unregistered.setdefault(row.content_type_id, []).append(row.object_id)
    extra: dict[tuple[int, str], Any] = {}
    for content_type_id, object_ids in unregistered.items():
        model = row_model_of(content_type_id)
        if model is None:
            continue  # a model no longer installed: nothing to show but the blank
        for obj in model._default_manager.filter(pk__in=_valid_pks(model, object_ids)).order_by():
            extra[(content_type_id, str(obj.pk))] = obj
    objects = []
    for row, obj in found:
        if obj is None and row.object_id is not None:
            obj = extra.get((row.content_type_id, row.object_id))  # type: ignore[arg-type]
        Customer.source.set_cached_value(row, obj)  # type: ignore[attr-defined]
        objects.append((row, obj))
    return objects


def _valid_pks(model: type[models.Model], values: list[str]) -> list[Any]:
    """The values that can be ``model``'s primary keys (a row's text key,
    read back): a value the key refuses is skipped, not a 500."""
    pks = []
    for value in values:
        try:
            pks.append(model._meta.pk.to_python(value))
        except ValidationError:
            continue
    return pks


def object_html(obj: Any, label: str | None) -> str | None:
    """An object as a list cell shows it: its text, linked to its change
    page when its model is in the admin, with its model ("team") under it;
    None (the blank mark) for no object."""
    if obj is None:
        return None
    url = object_admin_url(obj)
    text = format_html('<a href="{}">{}</a>', url, obj) if url else format_html("{}", obj)
    if not label:
        return text
    return format_html('{}<span class="autumn-quiet autumn-model">{}</span>', text, label)


def billing_rows(row: Customer) -> tuple[list[CustomerPlan], list[CustomerFeature]]:
    """The row's subscriptions and purchases, balances and flags, as unsaved
    :class:`CustomerPlan` and :class:`CustomerFeature` rows built from
    Autumn's last answer (``data``) by the rules ``billing.store`` writes
    the tables with: the change page shows what the JSON under it says,
    with no query, also for a row stored before the tables existed."""
    return billing.rows_of(row.pk, row.data)
