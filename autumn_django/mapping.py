"""From a Django object (a user, a team) to the Autumn customer it should be.

The site decides the mapping: for users with three settings
(``CUSTOMER_ID``, ``CUSTOMER_DATA``, ``SHOULD_SYNC``), for any model with a
:class:`~autumn_django.sources.CustomerSource`. This module applies it,
checks what it gives and hashes the result, so that a save that changes nothing Autumn holds (Django's
``last_login`` update on every login) is recognised without a request.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from . import conf, contract, sources
from .exceptions import MappingError, message_text
from .sources import CustomerSource, default_customer_data, default_customer_id

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
    """What Autumn should hold for one object; ``hash`` identifies it."""

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


def should_sync(obj: Any, source: CustomerSource | None = None) -> bool:
    """Whether ``obj`` is billed (``SHOULD_SYNC`` for a user); anything the
    source raises becomes a :class:`MappingError` naming it."""
    source = source or sources.registry().for_object(obj)
    return bool(_call(source, "should_sync", obj))


def payload_for(obj: Any, source: CustomerSource | None = None) -> Payload:
    """The payload for ``obj`` (a user, a team...); :class:`MappingError` if
    its source raises or gives anything Autumn or the mirror would refuse.
    Checked here, before anything is sent or written, because the source's
    methods are the site's code."""
    source = source or sources.registry().for_object(obj)
    name, what = source.function_name, source.describe(obj)
    customer_id = _call(source, "customer_id", obj)
    problem = contract.customer_id_problem(customer_id)
    if problem is None and len(customer_id) > MAX_ID_LENGTH:
        problem = f"longer than the mirror's {MAX_ID_LENGTH} characters"
    if problem:
        raise MappingError(
            f"{name('customer_id')} gave {_shown(customer_id)} for {what}, which Autumn refuses "
            f"(customer_id: {problem}). Fix {_fix(source, 'customer_id')}; nothing was sent."
        )
    data = _call(source, "customer_data", obj)
    if not isinstance(data, dict):
        raise MappingError(
            f"{name('customer_data')} must return a dict, not {type(data).__name__}; nothing was sent."
        )
    unknown = sorted(str(key) for key in set(data) - set(CUSTOMER_FIELDS))
    if unknown:
        raise MappingError(
            f"{name('customer_data')} returned {_shown(', '.join(unknown))}; it may return only "
            f"{', '.join(CUSTOMER_FIELDS)}. Nothing was sent."
        )
    for field_name, limit in TEXT_LIMITS.items():
        problem = _text_problem(data.get(field_name), limit)
        if problem:
            raise MappingError(
                f"{name('customer_data')} gave a {field_name} for {what} that {problem}; nothing was sent."
            )
    metadata = data.get("metadata")
    if metadata is not None:
        problem = _metadata_problem(metadata)
        if problem:
            raise MappingError(
                f"{name('customer_data')} gave metadata for {what} that {problem}; nothing was sent."
            )
    email = data.get("email")
    if email and not contract.is_valid_email(email):
        raise MappingError(
            f"{name('customer_data')} gave the email {_shown(email)} for {what}, which Autumn "
            "refuses as not a valid email address; nothing was sent."
        )
    # Blank strings are stored by Autumn as null: compare them as null too.
    fields = {key: (value if value != "" else None) for key, value in data.items()}
    if fields.get("metadata", {}) is None:  # Autumn refuses a null metadata: none is none to set
        del fields["metadata"]
    try:
        return Payload.build(customer_id, fields)
    except (TypeError, ValueError, RecursionError) as error:  # not JSON, NaN, a cycle
        raise MappingError(
            f"{name('customer_data')} gave data for {what} that is not valid JSON "
            f"({type(error).__name__}: {_cut(str(error))}); nothing was sent."
        ) from None


def _fix(source: CustomerSource, function: str) -> str:
    """What to fix, as a message says it: the setting, or the source's method."""
    name = source.function_name(function)
    return f"the {name[8:-2]} setting" if name.startswith("AUTUMN[") else name


#: The longest customer id the mirror holds (Autumn sets no limit of its own).
MAX_ID_LENGTH = 255
#: The longest text of each field the mirror's columns hold; Autumn's
#: contract sets none, so the columns decide (contract notes).
TEXT_LIMITS = {"name": 255, "email": 254, "fingerprint": 255}
#: How deep and how large metadata may be: JSON nested past this depth
#: breaks encoders (RecursionError), and Autumn stores it whole per customer.
MAX_METADATA_DEPTH = 16
MAX_METADATA_BYTES = 64 * 1024


def _call(source: CustomerSource, function: str, obj: Any) -> Any:
    """Run one of the source's mapping methods (the site's code); whatever it
    raises becomes a :class:`MappingError` naming it, so one object's bad data
    fails that object's row and never the save, the task or a bulk run."""
    try:
        return getattr(source, function)(obj)
    except Exception as error:
        raise MappingError(
            f"{source.function_name(function)} raised {type(error).__name__} for {source.describe(obj)}: "
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
