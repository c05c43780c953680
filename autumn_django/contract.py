"""Autumn's customers API, as the rules both sides of the wire must share.

The client refuses bad input before it is sent and the emulator refuses it the
way Autumn does; both read the rules from this module, so they cannot drift
apart. It summarises Autumn's customers API as read from Autumn's server
source and official SDKs (docs/contract-notes.md).

Contract notes: where the contract is silent, what we chose and why.

* Paths are the snake_case RPC routes (``/v1/customers.get_or_create``);
  ``customers.getOrCreate``, served for two days in February 2026, is not.
* Versions: SemVer (``2.1``, ``2.1.0``) with a known major.minor, or one of the
  exact CalVer release dates (optionally with ``.clover``). Any other value is
  refused, as the server's lookup tables refuse it. autumn-django speaks the
  2.x customers API, so versions below 2.1 are refused by our settings check.
* Customer ids: the rules of the server's customer id schema (colons
  allowed). The server sets no length limit; nor do we.
* Emails: Autumn validates with zod's email check; we use an equivalent
  pragmatic pattern (one ``@``, a dot in the domain, no spaces).
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple

BASE_URL = "https://api.useautumn.com"
DEFAULT_API_VERSION = "2.1"

GET_OR_CREATE = "customers.get_or_create"
GET = "customers.get"
LIST = "customers.list"
UPDATE = "customers.update"
DELETE = "customers.delete"
ROUTES = (GET_OR_CREATE, GET, LIST, UPDATE, DELETE)

#: Spellings that clients have used but Autumn does not serve, with the route
#: to use instead (the emulator names it in its 404).
RENAMED_ROUTES = {"customers.getOrCreate": GET_OR_CREATE}

Env = Literal["sandbox", "live"]


def path(route: str) -> str:
    """The URL path of a route: ``customers.list`` -> ``/v1/customers.list``."""
    return f"/v1/{route}"


class _Unset:
    """A field not given, as opposed to one given as ``None`` (JSON null):
    the client leaves it out of the body, the emulator finds it absent."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"  # one instance, pickled or not


UNSET: Any = _Unset()


# --- Error bodies --------------------------------------------------------------


def default_error_code(status: int) -> str:
    """The ``code`` of an error answer whose body carries none (a plain-text
    429 from the rate limiter, a proxy's HTML 502)."""
    if status == 429:
        return "rate_limit_exceeded"
    if status == 503:
        return "service_unavailable"
    if status >= 500:
        return "internal_error"
    return f"http_{status}"


# --- Secret keys -------------------------------------------------------------

SECRET_KEY_PREFIXES: dict[str, Env] = {"am_sk_test_": "sandbox", "am_sk_live_": "live"}
SECRET_KEY_RE = re.compile(r"^am_sk_(?:test|live)_[A-Za-z0-9]{42}$")
PUBLISHABLE_KEY_PREFIX = "am_pk_"


def key_env(secret_key: str) -> Env | None:
    """The environment a key works in; Autumn decides it by the prefix alone."""
    for prefix, env in SECRET_KEY_PREFIXES.items():
        if secret_key.startswith(prefix):
            return env
    return None


# --- API versions ------------------------------------------------------------


class ApiVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


#: Released versions (major, minor); see the server's ``ApiVersion`` enum.
#: 2.5 is what the official SDK 1.2.0 sends.
KNOWN_VERSIONS = frozenset({(0, 1), (0, 2), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5)})
CALVER_VERSIONS = {
    "2025-02-01": ApiVersion(0, 1),
    "2025-04-01": ApiVersion(0, 2),
    "2025-04-17": ApiVersion(1, 1),
    "2025-05-05": ApiVersion(1, 2),
    "2026-03-17": ApiVersion(2, 1),
    "2026-03-18": ApiVersion(2, 2),
    "2026-05-13": ApiVersion(2, 3),
}
MIN_SUPPORTED_VERSION = ApiVersion(2, 1)
FIRST_CURSOR_VERSION = ApiVersion(2, 3)
_SEMVER_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")


def parse_api_version(value: str) -> ApiVersion | None:
    """Parse an ``x-api-version`` value as Autumn does; ``None`` when refused."""
    value = value.strip()
    calver = CALVER_VERSIONS.get(value.removesuffix(".clover"))
    if calver is not None:
        return calver
    match = _SEMVER_RE.match(value)
    if not match:
        return None
    major, minor, patch = int(match[1]), int(match[2]), int(match[3] or 0)
    if (major, minor) not in KNOWN_VERSIONS:
        return None
    return ApiVersion(major, minor, patch)


def uses_cursor_pagination(version: ApiVersion) -> bool:
    """``customers.list`` pages by offset at 2.1 and 2.2, by cursor from 2.3."""
    return version >= FIRST_CURSOR_VERSION


# --- Customer ids and fields -------------------------------------------------

_ID_RE = re.compile(r"^[a-zA-Z0-9_:-]+$")
_ID_BAD_CHAR_RE = re.compile(r"[^a-zA-Z0-9_:-]")
ID_HINT = "Use only letters, numbers, underscores, hyphens, and colons."
_EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@.]+$")


def customer_id_problem(value: object) -> str | None:
    """Why Autumn would refuse ``value`` as a customer id, or ``None``.

    The wording is the server's, so the client's local refusal reads the same
    as the 400 it saves a round trip for.
    """
    if not isinstance(value, str):
        return f"Invalid input: expected string, received {json_type(value)}"
    if value == "":
        return "can't be an empty string"
    if _ID_RE.match(value):
        return None
    if "@" in value:
        return f"cannot contain @ symbol. {ID_HINT}"
    if " " in value:
        return f"cannot contain spaces. {ID_HINT}"
    if "." in value:
        return f"cannot contain periods. {ID_HINT}"
    bad = _ID_BAD_CHAR_RE.search(value)
    return f"cannot contain '{bad[0] if bad else value}'. {ID_HINT}"


def is_valid_email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value))


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, as zod names it in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


EXPAND_VALUES = (
    "invoices",
    "trials_used",
    "rewards",
    "entities",
    "referrals",
    "payment_method",
    "subscriptions.plan",
    "purchases.plan",
    "balances.feature",
    "flags.feature",
)

# --- customers.list ----------------------------------------------------------

OFFSET_DEFAULT_LIMIT = 10
CURSOR_DEFAULT_LIMIT = 50
MAX_LIST_LIMIT = 1000

# --- Rate limits (per org and environment) -----------------------------------


class RateLimit(NamedTuple):
    limit: int
    window_seconds: int


def endpoint_rate_limit(route: str, version: ApiVersion) -> RateLimit:
    """Autumn's per-endpoint limit; get_or_create and get count per customer."""
    if route == LIST:
        return RateLimit(50 if uses_cursor_pagination(version) else 5, 1)
    if route in (UPDATE, DELETE):
        return RateLimit(25, 1)
    return RateLimit(10_000, 1)


#: The org-wide cap shared by get_or_create and get (240,000 a minute).
ORG_CAP = RateLimit(240_000, 60)
ORG_CAPPED_ROUTES = (GET_OR_CREATE, GET)


def per_second_limit(route: str, version: ApiVersion) -> float:
    """The most calls a second Autumn allows ``route``: its own limit, or for
    get_or_create and get the org-wide cap spread over its window."""
    if route in ORG_CAPPED_ROUTES:
        return ORG_CAP.limit / ORG_CAP.window_seconds
    return float(endpoint_rate_limit(route, version).limit)
