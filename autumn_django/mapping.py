"""From a Django user to the Autumn customer it should be.

The site decides the mapping with three settings (``CUSTOMER_ID``,
``CUSTOMER_DATA``, ``SHOULD_SYNC``); this module applies them and hashes the
result, so that a save that changes nothing Autumn holds (Django's
``last_login`` update on every login) is recognised without a request.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from . import conf, contract
from .exceptions import MappingError, message_text

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
        text = json.dumps(
            {"id": customer_id, **fields}, sort_keys=True, cls=DjangoJSONEncoder, allow_nan=False
        )
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
    """``SHOULD_SYNC`` for ``user`` (every user when unset); anything it
    raises becomes a :class:`MappingError` naming the setting."""
    function = conf.load().should_sync
    return True if function is None else bool(_call("SHOULD_SYNC", function, user))


def payload_for(user: Any) -> Payload:
    """The payload for ``user``; :class:`MappingError` if the mapping raises
    or gives anything Autumn or the mirror would refuse. Checked here, before
    anything is sent or written, because the functions are the site's code."""
    settings = conf.load()
    customer_id = _call("CUSTOMER_ID", settings.customer_id or default_customer_id, user)
    problem = contract.customer_id_problem(customer_id)
    if problem is None and len(customer_id) > MAX_ID_LENGTH:
        problem = f"longer than the mirror's {MAX_ID_LENGTH} characters"
    if problem:
        raise MappingError(
            f"AUTUMN['CUSTOMER_ID'] gave {_shown(customer_id)} for user {user.pk}, which Autumn refuses "
            f"(customer_id: {problem}). Fix the CUSTOMER_ID setting; nothing was sent."
        )
    data = _call("CUSTOMER_DATA", settings.customer_data or default_customer_data, user)
    if not isinstance(data, dict):
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] must return a dict, not {type(data).__name__}; nothing was sent."
        )
    unknown = sorted(str(key) for key in set(data) - set(CUSTOMER_FIELDS))
    if unknown:
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] returned {_shown(', '.join(unknown))}; it may return only "
            f"{', '.join(CUSTOMER_FIELDS)}. Nothing was sent."
        )
    for name, limit in TEXT_LIMITS.items():
        problem = _text_problem(data.get(name), limit)
        if problem:
            raise MappingError(
                f"AUTUMN['CUSTOMER_DATA'] gave a {name} for user {user.pk} that {problem}; nothing was sent."
            )
    metadata = data.get("metadata")
    if metadata is not None:
        problem = _metadata_problem(metadata)
        if problem:
            raise MappingError(
                f"AUTUMN['CUSTOMER_DATA'] gave metadata for user {user.pk} that {problem}; nothing was sent."
            )
    email = data.get("email")
    if email and not contract.is_valid_email(email):
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] gave the email {_shown(email)} for user {user.pk}, which Autumn "
            "refuses as not a valid email address; nothing was sent."
        )
    # Blank strings are stored by Autumn as null: compare them as null too.
    fields = {name: (value if value != "" else None) for name, value in data.items()}
    if fields.get("metadata", {}) is None:  # Autumn refuses a null metadata: none is none to set
        del fields["metadata"]
    try:
        return Payload.build(customer_id, fields)
    except (TypeError, ValueError, RecursionError) as error:  # not JSON, NaN, a cycle
        raise MappingError(
            f"AUTUMN['CUSTOMER_DATA'] gave data for user {user.pk} that is not valid JSON "
            f"({type(error).__name__}: {_cut(str(error))}); nothing was sent."
        ) from None


#: The longest customer id the mirror holds (Autumn sets no limit of its own).
MAX_ID_LENGTH = 255
#: The longest text of each field the mirror's columns hold; Autumn's
#: contract sets none, so the columns decide (contract notes).
TEXT_LIMITS = {"name": 255, "email": 254, "fingerprint": 255}
#: How deep and how large metadata may be: JSON nested past this depth
#: breaks encoders (RecursionError), and Autumn stores it whole per customer.
MAX_METADATA_DEPTH = 16
MAX_METADATA_BYTES = 64 * 1024


def _call(setting: str, function: Callable[[Any], Any], user: Any) -> Any:
    """Run one of the site's mapping functions; whatever it raises becomes a
    :class:`MappingError` naming the setting, so one user's bad data fails
    that user's row and never the save, the task or a whole bulk run."""
    try:
        return function(user)
    except Exception as error:
        raise MappingError(
            f"AUTUMN['{setting}'] raised {type(error).__name__} for user {user.pk}: "
            f"{_cut(str(error))}. Nothing was sent."
        ) from error


def _text_problem(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string or None"
    if len(value) > limit:
        return f"is {len(value)} characters long (at most {limit})"
    return _unstorable(value)


def _unstorable(text: str) -> str | None:
    """Why a database (Autumn's or ours) cannot store ``text``, if it cannot."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (not valid Unicode)"
    return None


def _metadata_problem(metadata: Any) -> str | None:
    if not isinstance(metadata, dict):
        return f"is a {type(metadata).__name__}, not a dict"
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            return f"is nested deeper than {MAX_METADATA_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"has a key that is a {type(key).__name__}, not a string"
                problem = _unstorable(key)
                if problem:
                    return f"has a key that {problem}"
                stack.append((item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            return f"holds {value!r}, which JSON cannot carry"
        elif isinstance(value, str):
            problem = _unstorable(value)
            if problem:
                return f"holds a string that {problem}"
    size = len(json.dumps(metadata, cls=DjangoJSONEncoder, default=str))
    if size > MAX_METADATA_BYTES:
        return f"is {size} bytes as JSON (at most {MAX_METADATA_BYTES})"
    return None


def _cut(text: str, limit: int = 300) -> str:
    return message_text(text, limit)


def _shown(value: Any) -> str:
    """A value of the site's, for a message: its repr, cut short."""
    return _cut(repr(value), 80)


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
