"""The one place ``settings.AUTUMN`` is read.

:func:`load` returns one typed, validated snapshot of every key
(:class:`AutumnSettings`, read as attributes), built on first use and kept
until the ``AUTUMN`` setting changes (Django's ``setting_changed`` signal,
which ``override_settings`` and pytest-django's ``settings`` send). A user's
save therefore reads settings without validating them again or importing
the mapping functions again. :func:`problems` lists every mistake (the
system checks report them at ``manage.py check``); :func:`load` raises the
first one as :class:`AutumnImproperlyConfigured`. :func:`problems` never
raises, whatever ``settings.AUTUMN`` holds, and no message ever contains
the secret key (nor any part of it) or the credentials in a ``BASE_URL``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib.util
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from . import contract
from .exceptions import AutumnImproperlyConfigured

Timeout = tuple[float, float]

DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,
    "BASE_URL": contract.BASE_URL,
    "API_VERSION": contract.DEFAULT_API_VERSION,
    # (connect, read) seconds. Short enough that a request thread waiting on a
    # slow Autumn gives up in seconds, long enough for a cold list page.
    "TIMEOUT": (3.05, 15.0),
    "MAX_RETRIES": 3,
    # --- the sync engine: which users, as what customers ---
    "CUSTOMER_ID": None,  # callable or dotted path, user -> str; None: str(user.pk)
    "CUSTOMER_DATA": None,  # callable or dotted path, user -> dict; None: see mapping.default_customer_data
    "SHOULD_SYNC": None,  # callable or dotted path, user -> bool; None: every user
    # The models whose objects are customers: CustomerSource classes or their
    # dotted paths. None: the user model alone (autumn_django.sources.UserSource).
    "CUSTOMER_SOURCES": None,
    "DELETE_POLICY": "delete",  # or "keep": what a deleted or no longer qualifying user does remotely
    "DELETE_IN_STRIPE": False,
    "CREATE_IN_STRIPE": None,  # None: not sent; True/False: sent to get_or_create
    "AUTO_ENABLE_PLAN_ID": None,
    "SEND_EMAIL_RECEIPTS": None,
    "RAISE_ERRORS": False,  # True: a failed sync raises from the user's save (tests, development)
    # --- background work ---
    "TASK_BACKEND": "default",  # an alias of settings.TASKS
    "TASK_QUEUE": "default",
    "RETRY_DELAY": 30,  # seconds before the first retry of a failed sync; doubles each time
    "RETRY_MAX_DELAY": 6 * 3600,
    # --- autumn_sync ---
    # Client-side pacing per route, calls a second. None: Autumn's published
    # limits less 10%; a dict overrides routes ("customers.update": 25, ...);
    # False: no pacing.
    "RATE_LIMITS": None,
    # One budget for every process of the site: a Redis URL ("redis://...").
    # None: each process paces itself alone.
    "RATE_LIMIT_STORE": None,
    # The budget's name (the Autumn organisation); None: a hash of the key.
    "RATE_LIMIT_SCOPE": None,
    # The longest a call made outside autumn_sync (a task, a page) waits for
    # its slot before failing as retryable (the row is retried later).
    "RATE_LIMIT_MAX_WAIT": 60.0,
    # --- admin ---
    "ADMIN_TIMEOUT": (2.0, 5.0),  # (connect, read) for the admin's requests: a page must not hang
    # --- webhooks from Autumn ---
    # The signing secrets ("whsec_...") a delivery may be signed with: the
    # endpoint's, and during a rotation the old one too. Empty: the webhook
    # endpoint refuses every delivery.
    "WEBHOOK_SECRETS": (),
}

#: Settings that name a function: a callable or its dotted import path.
CALLABLE_SETTINGS = ("CUSTOMER_ID", "CUSTOMER_DATA", "SHOULD_SYNC")


@dataclass(frozen=True)
class AutumnSettings:
    """A validated snapshot of ``settings.AUTUMN`` with defaults filled in;
    each key is an attribute of the same name in lower case, and the three
    mapping settings are the functions themselves (dotted paths imported)."""

    secret_key: str = field(repr=False)
    base_url: str
    api_version: str
    timeout: Timeout
    max_retries: int
    customer_id: Callable[[Any], Any] | None = None
    customer_data: Callable[[Any], Any] | None = None
    should_sync: Callable[[Any], Any] | None = None
    delete_policy: Literal["delete", "keep"] = "delete"
    delete_in_stripe: bool = False
    create_in_stripe: bool | None = None
    auto_enable_plan_id: str | None = None
    send_email_receipts: bool | None = None
    raise_errors: bool = False
    task_backend: str = "default"
    task_queue: str = "default"
    retry_delay: float = 30.0
    retry_max_delay: float = 6 * 3600.0
    #: Calls a second per route, or None for no pacing (``RATE_LIMITS = False``).
    rate_limits: dict[str, float] | None = field(default=None, compare=False)
    rate_limit_store: str | None = field(default=None, repr=False)
    rate_limit_scope: str | None = None
    rate_limit_max_wait: float = 60.0
    admin_timeout: Timeout = (2.0, 5.0)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def env(self) -> contract.Env:
        """The environment the key works in (``sandbox`` or ``live``)."""
        env = contract.key_env(self.secret_key)
        assert env is not None  # validated
        return env

    @property
    def connection(self) -> tuple[Any, ...]:
        """What a client is built from: equal for settings that may share one."""
        return (self.secret_key, self.base_url, self.api_version, self.timeout, self.max_retries)

    def __repr__(self) -> str:
        return (
            f"AutumnSettings(secret_key='***', base_url={self.base_url!r}, "
            f"api_version={self.api_version!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r})"
        )


@dataclass(frozen=True)
class Problem:
    """One mistake in ``settings.AUTUMN``: which key, what is wrong, how to fix."""

    setting: str
    message: str
    hint: str = ""

    @property
    def name(self) -> str:
        return f'AUTUMN["{self.setting}"]'


def raw() -> dict[str, Any]:
    """``settings.AUTUMN`` as the site wrote it (an empty dict when absent)."""
    value = getattr(django_settings, "AUTUMN", None)
    return value if isinstance(value, dict) else {}


def merged() -> dict[str, Any]:
    """:data:`DEFAULTS` with ``settings.AUTUMN`` on top, each value made plain:
    a subclass of ``str``, ``int`` or ``float`` (at the top or one level into
    a list, tuple or dict) becomes the plain type, so no overridden method of
    the site's object runs after validation. May raise on a hostile
    ``settings.AUTUMN``; :func:`problems` reports that instead."""
    values = {**DEFAULTS, **raw()}
    for name in DEFAULTS:
        try:
            values[name] = _plain(values[name])
        except Exception:  # left as it is: its check reports it
            pass
    return values


def problems() -> list[Problem]:
    """Every mistake in ``settings.AUTUMN``, for the system checks. Never
    raises, whatever the setting holds, and never shows the secret key."""
    value = getattr(django_settings, "AUTUMN", None)
    if value is not None and not isinstance(value, dict):
        return [
            Problem(
                "*",
                f"settings.AUTUMN must be a dict, not {_type_name(value)}.",
                'Write AUTUMN = {"SECRET_KEY": ...} in your settings.',
            )
        ]
    try:
        values = merged()
    except Exception as exc:
        return [
            Problem(
                "*",
                f"settings.AUTUMN could not be read: it raised {_type_name(exc)}.",
                'Write a plain dict with string keys: AUTUMN = {"SECRET_KEY": ...}.',
            )
        ]
    found: list[Problem] = []
    for name, check in _CHECKS:
        try:
            found.extend(check(values[name], name))
        except Exception as exc:  # a value whose own methods raise
            found.append(
                Problem(
                    name,
                    f"could not be checked: its value ({_type_name(values[name])}) raised {_type_name(exc)}.",
                    "Give a plain value of the type the settings reference documents.",
                )
            )
    key = values.get("SECRET_KEY")
    return [
        Problem(problem.setting, _redact(problem.message, key), _redact(problem.hint, key))
        for problem in found
    ]


def unknown_keys() -> list[tuple[str, str | None]]:
    """Keys of ``settings.AUTUMN`` that autumn-django does not read, as the
    name to show (``AUTUMN["MAX_RETRY"]``), with a close known name where
    one exists (a typo is the usual cause). Never raises."""
    result: list[tuple[str, str | None]] = []
    try:
        keys = list(raw())
    except Exception:
        return result  # problems() reports it
    for key in keys:
        if type(key) is str:
            if key in DEFAULTS:
                continue
            close = difflib.get_close_matches(key, DEFAULTS, n=1) if len(key) < 100 else []
            shown = redact(key if len(key) <= _SHOW_LIMIT else key[:_SHOW_LIMIT] + "...")
            result.append((f'AUTUMN["{shown}"]', close[0] if close else None))
        else:
            result.append((f"AUTUMN[{show(key)}]", None))
    return result


_loaded: AutumnSettings | None = None


def load() -> AutumnSettings:
    """The validated settings, kept until ``settings.AUTUMN`` changes;
    raises the first problem found."""
    global _loaded
    snapshot = _loaded
    if snapshot is None:
        snapshot = _loaded = _build()
    return snapshot


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    global _loaded
    if setting == "AUTUMN":
        _loaded = None


def raise_errors() -> bool:
    """``RAISE_ERRORS``, read even when the settings are broken (the error
    at hand may be that), so a site that asked for errors gets them."""
    try:
        return load().raise_errors
    except AutumnImproperlyConfigured:
        return raw().get("RAISE_ERRORS") is True


def _build() -> AutumnSettings:
    found = problems()
    if found:
        first = found[0]
        raise AutumnImproperlyConfigured(f"{first.name} {first.message} {first.hint}".strip())
    values = merged()
    limits = values["RATE_LIMITS"]
    return AutumnSettings(
        secret_key=values["SECRET_KEY"],
        base_url=values["BASE_URL"].rstrip("/"),
        api_version=values["API_VERSION"],
        timeout=normalize_timeout(values["TIMEOUT"]),
        max_retries=values["MAX_RETRIES"],
        customer_id=_function(values["CUSTOMER_ID"]),
        customer_data=_function(values["CUSTOMER_DATA"]),
        should_sync=_function(values["SHOULD_SYNC"]),
        delete_policy=values["DELETE_POLICY"],
        delete_in_stripe=values["DELETE_IN_STRIPE"],
        create_in_stripe=values["CREATE_IN_STRIPE"],
        auto_enable_plan_id=values["AUTO_ENABLE_PLAN_ID"],
        send_email_receipts=values["SEND_EMAIL_RECEIPTS"],
        raise_errors=values["RAISE_ERRORS"],
        task_backend=values["TASK_BACKEND"],
        task_queue=values["TASK_QUEUE"],
        retry_delay=float(values["RETRY_DELAY"]),
        retry_max_delay=float(values["RETRY_MAX_DELAY"]),
        rate_limits=None if limits is False else rate_limits(values["API_VERSION"], limits),
        rate_limit_store=values["RATE_LIMIT_STORE"],
        rate_limit_scope=values["RATE_LIMIT_SCOPE"],
        rate_limit_max_wait=float(values["RATE_LIMIT_MAX_WAIT"]),
        admin_timeout=normalize_timeout(values["ADMIN_TIMEOUT"]),
        webhook_secrets=tuple(values["WEBHOOK_SECRETS"]),
    )


def _function(value: Any) -> Callable[[Any], Any] | None:
    """A function setting, imported if given as a dotted path (validated
    by :func:`problems` first)."""
    return import_string(value) if isinstance(value, str) else value


def autumn_limits(api_version: str) -> dict[str, float]:
    """Autumn's published limits per route for the version, in calls a second."""
    version = contract.parse_api_version(api_version) or contract.MIN_SUPPORTED_VERSION
    return {route: contract.per_second_limit(route, version) for route in contract.ROUTES}


def rate_limits(api_version: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Client-side pacing per route: Autumn's published per-second limits
    for the version, less 10% so that timing jitter on the way does not tip
    one of Autumn's windows over, with ``overrides`` on top."""
    limits = {route: limit * 0.9 for route, limit in autumn_limits(api_version).items()}
    limits.update(overrides or {})
    return limits


def normalize_timeout(value: float | tuple[float, float] | list[float]) -> Timeout:
    """One number means the same limit for connecting and for reading."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


# --- Validation -------------------------------------------------------------------
#
# Every check takes the value and the key's name and returns the problems
# found; problems() runs each under a guard, so a value whose own methods
# raise is reported, not raised. Messages show values through show() (short,
# never raising, secret keys masked) and URLs through redact_url.

#: The longest timeout and retry delay accepted, in seconds: far above any
#: sensible value, far below where the sockets' and datetimes' arithmetic
#: overflows.
MAX_TIMEOUT = 24 * 3600.0
MAX_RETRY_DELAY = 30 * 24 * 3600.0

_SHOW_LIMIT = 80
_KEY_LIKE_RE = re.compile(r"am_sk_(?:test|live)_[A-Za-z0-9]*")
_WHITESPACE_HINT = (
    "Remove the whitespace around it; a secret file read with read_text() ends with a "
    "newline: use .strip(), e.g. Path(...).read_text().strip()."
)


def redact(text: str) -> str:
    """``text`` with anything shaped like a secret key masked."""
    return _KEY_LIKE_RE.sub("am_sk_***", text)


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` shown as ``***@``. Works on any
    string, parseable or not, and masks generously: everything between
    ``//`` (or the start) and the last ``@``."""
    at = url.rfind("@")
    if at == -1:
        return url
    slashes = url.find("//")
    start = slashes + 2 if 0 <= slashes < at else 0
    return url[:start] + "***" + url[at:]


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: ``localhost``,
    127.0.0.0/8 or ``::1``."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact(text: str, secret_key: object) -> str:
    text = redact(text)
    if isinstance(secret_key, str) and len(secret_key.strip()) >= 8:
        text = text.replace(secret_key.strip(), "***")
    return text


def _type_name(value: object) -> str:
    try:
        return str(type(value).__name__)
    except Exception:
        return "object"


def show(value: object) -> str:
    """A short repr for a message; never raises (a hostile ``__repr__``, an
    int too long to print, a list nested too deep) and masks secret keys."""
    try:
        if isinstance(value, str):  # cut first: a megabyte string stays cheap
            value = str.__str__(value)[: 2 * _SHOW_LIMIT]
        text = redact(repr(value))
    except Exception:
        return f"<{_type_name(value)} that cannot be shown>"
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _has_unsafe_characters(text: str) -> bool:
    """Whitespace or a control (or other invisible) character anywhere."""
    return any(char.isspace() or unicodedata.category(char).startswith("C") for char in text)


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, bool) or type(value) in (str, int, float):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


def _plain(value: Any) -> Any:
    if type(value) in (list, tuple):
        return type(value)(_plain_scalar(item) for item in value)
    if type(value) is dict:
        return {_plain_scalar(key): _plain_scalar(item) for key, item in value.items()}
    return _plain_scalar(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None (not a number, inf, nan, or an
    int too large for a float)."""
    if not _is_number(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive(value: object, most: float = math.inf) -> bool:
    """A finite number more than 0 and at most ``most``."""
    number = _finite(value)
    return number is not None and 0 < number <= most


def secret_key_problem(key: object) -> str | None:
    """What is wrong with a secret key, worded without showing the key or
    any part of it; None when it is well formed."""
    try:
        return _secret_key_problem(key)
    except Exception:  # a str subclass whose methods raise
        return "could not be read as a string."


_VALID_KEY = "a valid one is am_sk_test_ or am_sk_live_ followed by 42 letters and digits"


def _secret_key_problem(key: object) -> str | None:
    if key is None:
        return "is missing."
    if not isinstance(key, str):
        return f"must be a string, not {_type_name(key)}."
    key = str.__str__(key)
    if not key:
        return "is missing."
    if not key.strip():
        return "is blank: only whitespace."
    if key != key.strip():
        return "has whitespace around it (a newline at the end, say): strip it."
    if key.startswith(contract.PUBLISHABLE_KEY_PREFIX):
        return "is a publishable key (am_pk_...); the server API needs the secret key (am_sk_...)."
    if contract.key_env(key) is None:
        return f"does not start with am_sk_test_ or am_sk_live_ ({_VALID_KEY})."
    if not contract.SECRET_KEY_RE.fullmatch(key):
        length = len(key) - len("am_sk_test_")
        there = f"this one has {length} character{'s' if length != 1 else ''} after the prefix"
        if length == 42:
            there += ", not all of them letters or digits"
        return f"is not a well-formed Autumn secret key: {_VALID_KEY} ({there})."
    return None


def _check_secret_key(value: Any, name: str) -> list[Problem]:
    message = secret_key_problem(value)
    if message is None:
        return []
    padded = isinstance(value, str) and value.strip() and value != value.strip()
    return [
        Problem(
            name,
            message,
            _WHITESPACE_HINT
            if padded
            else "Copy the secret key from Autumn's dashboard (Developer > API keys) and read it from "
            'the environment, e.g. AUTUMN = {"SECRET_KEY": os.environ["AUTUMN_SECRET_KEY"]}.',
        )
    ]


def base_url_problem(url: object) -> str | None:
    """What is wrong with a ``BASE_URL``, worded with its credentials
    masked; None when it is an http(s) URL a request can go to."""
    example = f"an http(s) URL such as {contract.BASE_URL!r}"
    if not isinstance(url, str):
        return f"must be {example}, not {_type_name(url)}."
    shown = show(redact_url(url))
    if _has_unsafe_characters(url):
        return f"contains whitespace or a control character: {shown}."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        return f"is not a valid URL: {shown}."
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return f"must be {example}, with no query or fragment, not {shown}."
    return None


def _check_base_url(value: Any, name: str) -> list[Problem]:
    message = base_url_problem(value)
    if message is None:
        return []
    hint = "Leave it out to use Autumn's production API."
    if isinstance(value, str) and _has_unsafe_characters(value):
        hint = (
            "Remove it; a value read from a file or an environment variable may end with a "
            "newline: use .strip()."
        )
    return [Problem(name, message, hint)]


def _check_api_version(value: Any, name: str) -> list[Problem]:
    hint = (
        f'autumn-django speaks the 2.x customers API; use "{contract.DEFAULT_API_VERSION}" '
        '(the default) or a later one such as "2.3".'
    )
    if not isinstance(value, str):
        return [Problem(name, f'must be a string such as "2.1", not {_type_name(value)}.', hint)]
    if value.strip() and value != value.strip():
        return [Problem(name, f"has whitespace around it: {show(value)}.", "Remove it: .strip() the value.")]
    version = contract.parse_api_version(value)
    if version is not None and version >= contract.MIN_SUPPORTED_VERSION:
        return []
    what = "is not an Autumn API version" if version is None else "is older than 2.1"
    return [Problem(name, f"{what}: {show(value)}.", hint)]


def _check_timeout(value: Any, name: str) -> list[Problem]:
    if _positive(value, MAX_TIMEOUT):
        return []
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if all(_positive(number, MAX_TIMEOUT) for number in value):
            return []
    return [
        Problem(
            name,
            f"must be a number of seconds more than 0 and at most {MAX_TIMEOUT:.0f}, or a (connect, read) "
            f"pair of them, not {show(value)}.",
            "For example 10 or (3.05, 15).",
        )
    ]


def _check_max_retries(value: Any, name: str) -> list[Problem]:
    if type(value) is int and value >= 0:
        return []
    return [Problem(name, f"must be a whole number of 0 or more, not {show(value)}.", "For example 3.")]


def _check_function(value: Any, name: str) -> list[Problem]:
    if value is None or callable(value):
        return []
    if not isinstance(value, str):
        return [Problem(name, f"must be a function or its dotted path, not {show(value)}.")]
    hint = "Give the full path, e.g. 'myproject.billing.customer_id'."
    try:
        function = import_string(value)
    except ImportError as exc:
        return [Problem(name, f"is {show(value)}, which cannot be imported ({_text(exc)}).", hint)]
    except Exception as exc:  # the module raised as it was imported
        return [Problem(name, f"is {show(value)}, whose import raised {_type_name(exc)}: {_text(exc)}.")]
    if not callable(function):
        return [Problem(name, f"is {show(value)}, which is not callable.")]
    return []


def _check_sources(value: Any, name: str) -> list[Problem]:
    """The shape only: what each entry imports to is checked by
    :func:`autumn_django.sources.source_problems`, once the apps are ready."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(entry, (str, type)) for entry in value):
        return []
    return [
        Problem(
            name,
            f"must be a list of CustomerSource classes or their dotted paths, not {show(value)}.",
            'e.g. ["autumn_django.sources.UserSource", "teams.billing.TeamSource"].',
        )
    ]


def _text(exc: BaseException) -> str:
    try:
        text = redact(str(exc))
    except Exception:
        return _type_name(exc)
    return text if len(text) <= 2 * _SHOW_LIMIT else text[: 2 * _SHOW_LIMIT - 3] + "..."


def _check_delete_policy(value: Any, name: str) -> list[Problem]:
    if isinstance(value, str) and value in ("delete", "keep"):
        return []
    return [Problem(name, f'must be "delete" or "keep", not {show(value)}.')]


def _check_bool(value: Any, name: str) -> list[Problem]:
    if isinstance(value, bool):
        return []
    return [Problem(name, f"must be True or False, not {show(value)}.")]


def _check_optional_bool(value: Any, name: str) -> list[Problem]:
    if value is None or isinstance(value, bool):
        return []
    return [Problem(name, f"must be True, False or None (not sent), not {show(value)}.")]


def _check_plan_id(value: Any, name: str) -> list[Problem]:
    if value is None or (isinstance(value, str) and value):
        return []
    return [Problem(name, f"must be a plan id or None, not {show(value)}.")]


def _check_name(value: Any, name: str) -> list[Problem]:
    if isinstance(value, str) and value:
        return []
    return [Problem(name, f"must be a non-empty string, not {show(value)}.")]


def _check_retry_delay(value: Any, name: str) -> list[Problem]:
    if _positive(value, MAX_RETRY_DELAY):
        return []
    return [
        Problem(
            name,
            f"must be a number of seconds more than 0 and at most {MAX_RETRY_DELAY:.0f} (30 days), "
            f"not {show(value)}.",
        )
    ]


def _check_rate_limits(value: Any, name: str) -> list[Problem]:
    if value is None or value is False:
        return []
    if not isinstance(value, dict):
        return [Problem(name, f"must be None, False or a dict, not {show(value)}.")]
    found = []
    for route, rate in value.items():
        if not (isinstance(route, str) and route in contract.ROUTES):
            found.append(Problem(name, f"names {show(route)}, not one of {', '.join(contract.ROUTES)}."))
        elif rate is not None and not _positive(rate):
            found.append(
                Problem(
                    name, f"gives {route!r} {show(rate)}; use a finite number of calls a second, or None."
                )
            )
    return found


def _check_rate_limit_store(value: Any, name: str) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        shown = show(redact_url(value) if isinstance(value, str) else value)
        return [
            Problem(
                name,
                f"must be None or a Redis URL, not {shown}.",
                'e.g. "redis://127.0.0.1:6379/0" (the same for every process of the site).',
            )
        ]
    if importlib.util.find_spec("redis") is None or importlib.util.find_spec("pyrate_limiter") is None:
        return [
            Problem(
                name,
                "is set, but the packages it needs are not installed.",
                "pip install 'autumn-django[shared-pacing]' (redis and pyrate-limiter).",
            )
        ]
    return []


def _check_optional_name(value: Any, name: str) -> list[Problem]:
    return [] if value is None else _check_name(value, name)


def _check_max_wait(value: Any, name: str) -> list[Problem]:
    if _positive(value, 3600):
        return []
    return [Problem(name, f"must be a number of seconds more than 0 and at most 3600, not {show(value)}.")]


def _check_webhook_secrets(value: Any, name: str) -> list[Problem]:
    hint = "Copy each signing secret from Autumn's dashboard (Developer > Webhooks): whsec_ and base64."
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [Problem(name, f"must be a list of signing secrets, not {_type_name(value)}.", hint)]
    for position, secret in enumerate(value):
        if not (isinstance(secret, str) and webhook_secret_is_valid(secret)):
            # Never shown: a secret, even a malformed one, stays out of messages.
            return [Problem(name, f"holds a malformed signing secret (item {position}).", hint)]
    return []


def webhook_secret_is_valid(secret: str) -> bool:
    """``whsec_`` and non-empty base64, nothing around it."""
    body = secret.removeprefix("whsec_")
    if body == secret or not body or body != body.strip():
        return False
    try:
        return bool(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
    except (binascii.Error, ValueError):
        return False


_CHECKS: tuple[tuple[str, Callable[[Any, str], list[Problem]]], ...] = (
    ("SECRET_KEY", _check_secret_key),
    ("BASE_URL", _check_base_url),
    ("API_VERSION", _check_api_version),
    ("TIMEOUT", _check_timeout),
    ("ADMIN_TIMEOUT", _check_timeout),
    ("MAX_RETRIES", _check_max_retries),
    *((name, _check_function) for name in CALLABLE_SETTINGS),
    ("CUSTOMER_SOURCES", _check_sources),
    ("DELETE_POLICY", _check_delete_policy),
    ("DELETE_IN_STRIPE", _check_bool),
    ("RAISE_ERRORS", _check_bool),
    ("CREATE_IN_STRIPE", _check_optional_bool),
    ("SEND_EMAIL_RECEIPTS", _check_optional_bool),
    ("AUTO_ENABLE_PLAN_ID", _check_plan_id),
    ("TASK_BACKEND", _check_name),
    ("TASK_QUEUE", _check_name),
    ("RATE_LIMITS", _check_rate_limits),
    ("RATE_LIMIT_STORE", _check_rate_limit_store),
    ("RATE_LIMIT_SCOPE", _check_optional_name),
    ("RATE_LIMIT_MAX_WAIT", _check_max_wait),
    ("RETRY_DELAY", _check_retry_delay),
    ("RETRY_MAX_DELAY", _check_retry_delay),
    ("WEBHOOK_SECRETS", _check_webhook_secrets),
)
