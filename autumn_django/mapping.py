"""From a Django user to the Autumn customer it should be.

The site decides the mapping with three settings (``CUSTOMER_ID``,
``CUSTOMER_DATA``, ``SHOULD_SYNC``); this module applies them and hashes the
result, so that a save that changes nothing Autumn holds (Django's
``last_login`` update on every login) is recognised without a request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from . import conf, contract
from .exceptions import MappingError

__all__ = [
    "CUSTOMER_FIELDS",
    "MappingError",
    "Payload",
    "current_env",
    "default_customer_data",
    "default_customer_id",
    "get_or_create_options",
    "payload_for",
    "should_sync",
]

#: The customer fields a site may set through ``CUSTOMER_DATA`` (and the
#: ones compared with what Autumn holds).
CUSTOMER_FIELDS = ("name", "email", "fingerprint", "metadata")


@dataclass(frozen=True)
class Payload:
    """What Autumn should hold for one user; ``hash`` identifies it."""

    customer_id: str
    fields: dict[str, Any]
    hash: str

    @classmethod
    def build(cls, customer_id: str, fields: dict[str, Any]) -> Payload:
        # One encoding serves both ends: the hash, and the fields as Autumn
        # will return them (UUIDs, dates and decimals as JSON strings).
        text = json.dumps({"id": customer_id, **fields}, sort_keys=True, cls=DjangoJSONEncoder)
        decoded = json.loads(text)
        del decoded["id"]
        return cls(customer_id, decoded, hashlib.sha256(text.encode()).hexdigest())


def default_customer_id(user: Any) -> str:
    return str(user.pk)


def default_customer_data(user: Any) -> dict[str, Any]:
    """The full name (or the username), the email, and the user's pk in metadata.

    Works with custom user models: ``get_full_name`` and the email field are
    used only where the model has them.
    """
    get_full_name = getattr(user, "get_full_name", None)
    name = (get_full_name() if callable(get_full_name) else "") or user.get_username()
    email_field = user.get_email_field_name() if hasattr(user, "get_email_field_name") else "email"
    email = getattr(user, email_field, None) or None
    pk = user.pk if isinstance(user.pk, int) else str(user.pk)
    return {"name": name or None, "email": email, "metadata": {"django_user_id": pk}}


def should_sync(user: Any) -> bool:
    function = conf.load().should_sync
    return True if function is None else bool(function(user))


def payload_for(user: Any) -> Payload:
    """The payload for ``user``; :class:`MappingError` if the mapping is unusable."""
    settings = conf.load()
    id_function = settings.customer_id or default_customer_id
    data_function = settings.customer_data or default_customer_data
    customer_id = id_function(user)
    problem = contract.customer_id_problem(customer_id)
    if problem:
        raise MappingError(
            f"AUTUMN['CUSTOMER_ID'] gave {customer_id!r} for user {user.pk}, which Autumn refuses "
            f"(customer_id: {problem}). Fix the CUSTOMER_ID setting; nothing was sent."
        )
    data = data_function(user)
    if not isinstance(data, dict):
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] must return a dict, not {type(data).__name__}; nothing was sent."
        )
    unknown = sorted(set(data) - set(CUSTOMER_FIELDS))
    if unknown:
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] returned {', '.join(unknown)}; it may return only "
            f"{', '.join(CUSTOMER_FIELDS)}. Nothing was sent."
        )
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise MappingError("AUTUMN['CUSTOMER_DATA'] must give metadata as a dict; nothing was sent.")
    email = data.get("email")
    if email and not contract.is_valid_email(email):
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] gave the email {email!r} for user {user.pk}, which Autumn "
            "refuses as not a valid email address; nothing was sent."
        )
    # Blank strings are stored by Autumn as null: compare them as null too.
    fields = {name: (value if value != "" else None) for name, value in data.items()}
    return Payload.build(customer_id, fields)


def get_or_create_options() -> dict[str, Any]:
    """The site-wide get_or_create keywords that are set (None means not sent)."""
    settings = conf.load()
    options = {
        "create_in_stripe": settings.create_in_stripe,
        "auto_enable_plan_id": settings.auto_enable_plan_id,
        "send_email_receipts": settings.send_email_receipts,
    }
    return {name: value for name, value in options.items() if value is not None}


def current_env() -> str:
    """The environment the configured key works in: a mirror row belongs to one."""
    return conf.load().env
