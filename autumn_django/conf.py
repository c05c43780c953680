"""The one place ``settings.AUTUMN`` is read.

:func:`load` returns one typed, validated snapshot of every key
(:class:`AutumnSettings`, read as attributes), built on first use and kept
until the ``AUTUMN`` setting changes (Django's ``setting_changed`` signal,
which ``override_settings`` and pytest-django's ``settings`` send). A user's
save therefore reads settings without validating them again or importing
the mapping functions again. :func:`problems` lists every mistake (the
system checks report them at ``manage.py check``); :func:`load` raises the
first one as :class:`AutumnImproperlyConfigured`. No message ever contains
the secret key itself.
"""

from __future__ import annotations

import difflib
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
    # --- admin ---
    "ADMIN_TIMEOUT": (2.0, 5.0),  # (connect, read) for the admin's requests: a page must not hang
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
    admin_timeout: Timeout = (2.0, 5.0)

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


def problems() -> list[Problem]:
    """Every mistake in ``settings.AUTUMN``, for the system checks."""
    value = getattr(django_settings, "AUTUMN", None)
    if value is not None and not isinstance(value, dict):
        return [
            Problem(
                "*",
                f"settings.AUTUMN must be a dict, not {type(value).__name__}.",
                'Write AUTUMN = {"SECRET_KEY": ...} in your settings.',
            )
        ]
    found: list[Problem] = []
    values = {**DEFAULTS, **raw()}
    for check in (_check_secret_key, _check_base_url, _check_api_version):
        problem = check(values)
        if problem:
            found.append(problem)
    found.extend(_check_timeout(values["TIMEOUT"]))
    found.extend(_check_timeout(values["ADMIN_TIMEOUT"], "ADMIN_TIMEOUT"))
    found.extend(_check_engine(values))
    retries = values["MAX_RETRIES"]
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        found.append(Problem("MAX_RETRIES", "must be a whole number of 0 or more.", "For example 3."))
    return found


def unknown_keys() -> list[tuple[str, str | None]]:
    """Keys of ``settings.AUTUMN`` that autumn-django does not read, with a
    close known name where one exists (a typo is the usual cause)."""
    result = []
    for key in raw():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            result.append((key, close[0] if close else None))
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
    values = {**DEFAULTS, **raw()}
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
        admin_timeout=normalize_timeout(values["ADMIN_TIMEOUT"]),
    )


def _function(value: Any) -> Callable[[Any], Any] | None:
    """A function setting, imported if given as a dotted path (validated
    by :func:`problems` first)."""
    return import_string(value) if isinstance(value, str) else value


def rate_limits(api_version: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Client-side pacing per route: Autumn's published per-second limits
    for the version, less 10% so that timing jitter on the way does not tip
    one of Autumn's windows over, with ``overrides`` on top."""
    version = contract.parse_api_version(api_version) or contract.MIN_SUPPORTED_VERSION
    limits = {route: contract.per_second_limit(route, version) * 0.9 for route in contract.ROUTES}
    limits.update(overrides or {})
    return limits


def normalize_timeout(value: float | tuple[float, float] | list[float]) -> Timeout:
    """One number means the same limit for connecting and for reading."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


def secret_key_problem(key: object) -> str | None:
    """What is wrong with a secret key, worded without showing the key."""
    if not isinstance(key, str) or not key:
        return "is missing."
    if key.startswith(contract.PUBLISHABLE_KEY_PREFIX):
        return "is a publishable key (am_pk_...); the server API needs the secret key (am_sk_...)."
    if contract.key_env(key) is None:
        return "does not start with am_sk_test_ or am_sk_live_."
    if not contract.SECRET_KEY_RE.match(key):
        return (
            "is not a well-formed Autumn secret key: after the prefix come 42 letters "
            f"and digits, this one has {len(key) - len('am_sk_test_')} characters there."
        )
    return None


def _check_secret_key(values: dict[str, Any]) -> Problem | None:
    message = secret_key_problem(values["SECRET_KEY"])
    if message is None:
        return None
    return Problem(
        "SECRET_KEY",
        message,
        "Copy the secret key from Autumn's dashboard (Developer > API keys) and read it "
        'from the environment, e.g. AUTUMN = {"SECRET_KEY": os.environ["AUTUMN_SECRET_KEY"]}.',
    )


def _check_base_url(values: dict[str, Any]) -> Problem | None:
    url = values["BASE_URL"]
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc and not parts.query:
            return None
    return Problem(
        "BASE_URL",
        f"must be an http(s) URL such as {contract.BASE_URL!r}, not {url!r}.",
        "Leave it out to use Autumn's production API.",
    )


def _check_api_version(values: dict[str, Any]) -> Problem | None:
    value = values["API_VERSION"]
    version = contract.parse_api_version(value) if isinstance(value, str) else None
    if version is not None and version >= contract.MIN_SUPPORTED_VERSION:
        return None
    what = "is not an Autumn API version" if version is None else "is older than 2.1"
    return Problem(
        "API_VERSION",
        f"{what}: {value!r}.",
        f'autumn-django speaks the 2.x customers API; use "{contract.DEFAULT_API_VERSION}" '
        '(the default) or a later one such as "2.3".',
    )


def _check_engine(values: dict[str, Any]) -> list[Problem]:
    found = []
    for name in CALLABLE_SETTINGS:
        value = values[name]
        if value is None or callable(value):
            continue
        if not isinstance(value, str):
            found.append(Problem(name, f"must be a function or its dotted path, not {value!r}."))
            continue
        try:
            function = import_string(value)
        except ImportError as exc:
            found.append(
                Problem(
                    name,
                    f"is {value!r}, which cannot be imported ({exc}).",
                    "Give the full path, e.g. 'myproject.billing.customer_id'.",
                )
            )
            continue
        if not callable(function):
            found.append(Problem(name, f"is {value!r}, which is not callable."))
    if values["DELETE_POLICY"] not in ("delete", "keep"):
        found.append(
            Problem("DELETE_POLICY", f'must be "delete" or "keep", not {values["DELETE_POLICY"]!r}.')
        )
    for name in ("DELETE_IN_STRIPE", "RAISE_ERRORS"):
        if not isinstance(values[name], bool):
            found.append(Problem(name, f"must be True or False, not {values[name]!r}."))
    for name in ("CREATE_IN_STRIPE", "SEND_EMAIL_RECEIPTS"):
        if values[name] is not None and not isinstance(values[name], bool):
            found.append(Problem(name, f"must be True, False or None (not sent), not {values[name]!r}."))
    plan = values["AUTO_ENABLE_PLAN_ID"]
    if plan is not None and (not isinstance(plan, str) or not plan):
        found.append(Problem("AUTO_ENABLE_PLAN_ID", f"must be a plan id or None, not {plan!r}."))
    for name in ("TASK_BACKEND", "TASK_QUEUE"):
        if not isinstance(values[name], str) or not values[name]:
            found.append(Problem(name, f"must be a non-empty string, not {values[name]!r}."))
    limits = values["RATE_LIMITS"]
    if limits not in (None, False):
        if not isinstance(limits, dict):
            found.append(Problem("RATE_LIMITS", f"must be None, False or a dict, not {limits!r}."))
        else:
            for route, rate in limits.items():
                if route not in contract.ROUTES:
                    found.append(
                        Problem("RATE_LIMITS", f"names {route!r}, not one of {', '.join(contract.ROUTES)}.")
                    )
                elif rate is not None and (
                    isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0
                ):
                    found.append(
                        Problem("RATE_LIMITS", f"gives {route!r} {rate!r}; use calls a second, or None.")
                    )
    for name in ("RETRY_DELAY", "RETRY_MAX_DELAY"):
        number = values[name]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
            found.append(Problem(name, f"must be a positive number of seconds, not {number!r}."))
    return found


def _check_timeout(value: Any, name: str = "TIMEOUT") -> list[Problem]:
    def positive(number: Any) -> bool:
        return isinstance(number, (int, float)) and not isinstance(number, bool) and number > 0

    if positive(value):
        return []
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(positive, value)):
        return []
    return [
        Problem(
            name,
            f"must be a number of seconds or a (connect, read) pair, not {value!r}.",
            "For example 10 or (3.05, 15).",
        )
    ]
