"""What the ModelAdmins, their actions and the remote pages all need: the
admin's own Autumn client, an error put into words for a page, and the link
to a user's change page."""

from __future__ import annotations

from typing import Any

from django.urls import NoReverseMatch, reverse

from .. import conf
from ..client import AutumnClient, get_client
from ..exceptions import AutumnAPIError, AutumnError


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


def user_admin_url(user: Any) -> str | None:
    """The user's change page in the admin, if the user model is registered."""
    if user is None:
        return None
    try:
        return reverse(f"admin:{user._meta.app_label}_{user._meta.model_name}_change", args=[user.pk])
    except NoReverseMatch:
        return None
