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
#: Anchored with ``\A``/``\Z``, never ``$`` (which matches before a trailing
#: newline), so even ``.match()`` is a full match; use ``.fullmatch()`` anyway.
SECRET_KEY_RE = re.compile(r"\Aam_sk_(?:test|live)_[A-Za-z0-9]{42}\Z")
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
# ASCII digits only (``\d`` takes any script's), few enough for int().
_SEMVER_RE = re.compile(r"\A([0-9]{1,9})\.([0-9]{1,9})(?:\.([0-9]{1,9}))?\Z")


def parse_api_version(value: str) -> ApiVersion | None:
    """Parse an ``x-api-version`` value as Autumn does; ``None`` when refused.

    The value is taken as it is: one with whitespace around it is refused,
    as a header cannot carry it (HTTP trims it before Autumn reads it)."""
    if not isinstance(value, str):
        return None
    calver = CALVER_VERSIONS.get(value.removesuffix(".clover"))
    if calver is not None:
        return calver
    match = _SEMVER_RE.fullmatch(value)
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

_ID_RE = re.compile(r"\A[a-zA-Z0-9_:-]+\Z")
_ID_BAD_CHAR_RE = re.compile(r"[^a-zA-Z0-9_:-]")
ID_HINT = "Use only letters, numbers, underscores, hyphens, and colons."
_EMAIL_RE = re.compile(r"\A[^\s@]+@[^\s@]+\.[^\s@.]+\Z")


def customer_id_problem(value: object) -> str | None:
    """Why Autumn would refuse ``value`` as a customer id, or ``None``.

    The wording is the server's, so the client's local refusal reads the same
    as the 400 it saves a round trip for.
    """
    if not isinstance(value, str):
        return f"Invalid input: expected string, received {json_type(value)}"
    if value == "":
        return "can't be an empty string"
    if _ID_RE.fullmatch(value):
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
    return isinstance(value, str) and _EMAIL_RE.fullmatch(value) is not None


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


# --- Answers -------------------------------------------------------------------
#
# What Autumn's answers must look like before the client returns one: the
# client checks every 200 with answer_problem() and every 404 with
# is_not_found_code(); the emulator's tests can hold its answers to the same.
# Each function returns a sentence saying what is wrong, or None. Fields
# Autumn may add later are not checked; missing optional fields are allowed.

ENVS = ("sandbox", "live")
#: Autumn's own customer ids (``cus_...``): its routes take them in place of
#: the customer's id, and answer with the customer's id.
INTERNAL_ID_PREFIX = "cus_"
#: ``created_at`` is epoch milliseconds; a datetime holds up to the year 9999.
MAX_CREATED_AT = 253_402_300_799_999
#: No answer of the customers API comes near this; a deeper one is refused
#: rather than handed to code that recurses over it.
MAX_ANSWER_DEPTH = 100
CUSTOMER_STRING_FIELDS = ("name", "email", "fingerprint", "stripe_id")
CUSTOMER_LIST_FIELDS = ("subscriptions", "purchases")
PAGE_COUNT_FIELDS = ("total", "total_count", "total_filtered_count", "limit", "offset")
_NOT_FOUND_CODE_RE = re.compile(r"\A[a-z0-9]+(?:_[a-z0-9]+)*_not_found\Z")


def is_not_found_code(code: object) -> bool:
    """Whether a 404's ``code`` is Autumn saying a thing does not exist
    (``customer_not_found``, ``product_not_found``...), rather than a 404
    from a wrong URL, a proxy or an unknown route."""
    return isinstance(code, str) and _NOT_FOUND_CODE_RE.fullmatch(code) is not None


def answer_problem(
    route: str, answer: object, *, env: str | None = None, request: dict[str, Any] | None = None
) -> str | None:
    """What is wrong with ``answer``, a 200's decoded body for ``route``, or
    None. ``env`` is the key's environment; ``request`` the body sent, which
    says the customer id the answer must carry: ``customer_id``, or
    ``new_customer_id`` after a rename, or none (null) for an id-less
    ``get_or_create``."""
    if nesting_depth(answer, MAX_ANSWER_DEPTH) > MAX_ANSWER_DEPTH:
        return f"it is nested deeper than {MAX_ANSWER_DEPTH} levels"
    if route == LIST:
        return list_page_problem(answer, env=env)
    if route == DELETE:
        if not isinstance(answer, dict):
            return f"it is {_a(answer)}, not an object"
        if answer.get("success") is not True:
            return f"success is {_show(answer.get('success', UNSET))}, not true"
        return None
    expected: Any = UNSET
    if request is not None:
        expected = request.get("new_customer_id", request.get("customer_id"))
    return customer_problem(answer, env=env, expected_id=expected)


def customer_problem(customer: object, *, env: str | None = None, expected_id: Any = UNSET) -> str | None:
    """What is wrong with one customer object, or None. ``expected_id``: the
    id asked for (``None`` for an id-less customer); an id of Autumn's own
    (``cus_...``) may answer with any id."""
    if not isinstance(customer, dict):
        return f"the customer is {_a(customer)}, not an object"
    if "id" not in customer:
        return "the customer has no id"
    found = customer["id"]
    if found is not None and not isinstance(found, str):
        return f"the customer's id is {_a(found)}, not a string or null"
    internal = isinstance(expected_id, str) and expected_id.startswith(INTERNAL_ID_PREFIX)
    if expected_id is not UNSET and not internal and found != expected_id:
        asked = "an id-less customer" if expected_id is None else _show(expected_id)
        return f"the customer's id is {_show(found)}, not {asked} as asked"
    if customer.get("env") not in ENVS:
        return f"the customer's env is {_show(customer.get('env', UNSET))}, not sandbox or live"
    if env is not None and customer["env"] != env:
        return f"the customer's env is {_show(customer['env'])}, but the key is for {env}"
    created = customer.get("created_at", UNSET)
    if not _is_number(created) or not 0 <= created <= MAX_CREATED_AT:
        return (
            f"the customer's created_at is {_show(created)}, not a time in milliseconds "
            "between 1970 and the year 9999"
        )
    metadata = customer.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"the customer's metadata is {_a(metadata)}, not an object or null"
    for name in CUSTOMER_STRING_FIELDS:
        value = customer.get(name)
        if value is not None and not isinstance(value, str):
            return f"the customer's {name} is {_a(value)}, not a string or null"
    for name in CUSTOMER_LIST_FIELDS:
        value = customer.get(name, [])
        if not isinstance(value, list):
            return f"the customer's {name} is {_a(value)}, not a list"
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return f"the customer's {name}[{index}] is {_a(item)}, not an object"
    return None


def list_page_problem(page: object, *, env: str | None = None) -> str | None:
    """What is wrong with a ``customers.list`` page (either style), or None."""
    if not isinstance(page, dict):
        return f"the page is {_a(page)}, not an object"
    items = page.get("list", UNSET)
    if not isinstance(items, list):
        return f"the page's list is {_show(items)}, not a list"
    for index, item in enumerate(items):
        problem = customer_problem(item, env=env)
        if problem:
            return f"list[{index}]: {problem}"
    for name in PAGE_COUNT_FIELDS:
        value = page.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"the page's {name} is {_show(value)}, not a whole number of 0 or more"
    if not isinstance(page.get("has_more", False), bool):
        return f"the page's has_more is {_show(page['has_more'])}, not true or false"
    cursor = page.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        return f"the page's next_cursor is {_a(cursor)}, not a string or null"
    return None


def nesting_depth(value: object, limit: int = MAX_ANSWER_DEPTH) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0), counted
    without recursion and only up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value  # not NaN
        and value not in (float("inf"), float("-inf"))
    )


def _a(value: object) -> str:
    """A JSON type with its article: "a string", "an array", "null"."""
    name = json_type(value)
    if name == "null":
        return "null"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _show(value: object, limit: int = 60) -> str:
    """A short, one-line account of a value from an answer."""
    if value is UNSET:
        return "missing"
    if isinstance(value, (dict, list)):
        return _a(value)
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
