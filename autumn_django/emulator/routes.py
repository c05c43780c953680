"""Autumn's five customers routes (and ``billing.attach``, in
:mod:`.billing`), each a function of the store and a body.

A handler validates the body, reads or writes the store and returns the JSON
Autumn would answer, or raises :class:`~.wire.Refusal` with Autumn's error.
The checks that come before a route (key, version, limits, scopes) are not
here; handlers run once those have passed, under the emulator's lock.

Contract notes: choices made where Autumn's customers API contract is silent.

* ``auto_enable_plan_id`` is checked only when a customer is created.
* ``stripe_id`` values must look like Stripe ids (``cus_...``); others are
  400 ``stripe_error`` as Stripe would refuse them. ``create_in_stripe``
  links a made-up ``cus_...`` id.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import contract
from ..contract import UNSET, ApiVersion
from . import billing
from .store import Store, decode_cursor, encode_cursor, position, processors, random_id
from .validation import Validator, matcher
from .wire import JSONDict, Refusal, Response, error_response, json_response

Handler = Callable[[Store, str, ApiVersion, JSONDict], JSONDict]


def route_name(path: str) -> str:
    """The route a path names: ``/v1/customers.get?x=1`` -> ``customers.get``."""
    return path.split("?", 1)[0].removeprefix("/v1/")


def resolve(path: str) -> str | None:
    """The route served at ``path`` (a customers or billing route), or None."""
    name = route_name(path)
    return name if path.startswith("/v1/") and name in HANDLERS else None


def unknown_route(method: str, path: str) -> Response:
    """Autumn's 404, with a hint at the route that was meant."""
    name = route_name(path)
    if name in contract.RENAMED_ROUTES:
        hint = f" Autumn renamed it: use POST {contract.path(contract.RENAMED_ROUTES[name])}."
    elif name in HANDLERS:
        hint = f" {name} is served for POST only."
    else:
        hint = f" The customers routes are {', '.join(map(contract.path, contract.ROUTES))}."
    return error_response(404, "not_found", f"No route {method.upper()} {path}.{hint}", "sandbox")


def dispatch(store: Store, route: str, version: ApiVersion, env: str, body: JSONDict) -> Response:
    """Answer a request that passed every check."""
    return json_response(200, HANDLERS[route](store, env, version, body))


def existing(store: Store, env: str, customer_id: str) -> JSONDict:
    record = store.find(env, customer_id)
    if record is None:
        raise Refusal(error_response(404, "customer_not_found", f"Customer {customer_id} not found", env))
    return record


def check_stripe_id(stripe_id: str, env: str) -> None:
    if not stripe_id.startswith("cus_") or len(stripe_id) < 8:
        raise Refusal(
            error_response(400, "stripe_error", f"(Stripe Error) No such customer: '{stripe_id}'", env)
        )


# --- the handlers ---------------------------------------------------------------


def get_or_create_customer(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    v = Validator(body, env)
    customer_id = v.required("customer_id", str, nullable=True, customer_id=True)
    name = v.optional("name", str, nullable=True)
    email = v.optional("email", str, nullable=True, email=True)
    fingerprint = v.optional("fingerprint", str, nullable=True)
    metadata = v.optional("metadata", dict)
    stripe_id = v.optional("stripe_id", str, nullable=True)
    create_in_stripe = v.optional("create_in_stripe", bool)
    plan_id = v.optional("auto_enable_plan_id", str)
    receipts = v.optional("send_email_receipts", bool)
    expand = v.expand()
    lookup_email = email if isinstance(email, str) else None
    if customer_id is None and not lookup_email:
        raise Refusal(error_response(400, "invalid_request", "Either customer ID or email is required", env))

    record = store.find(env, customer_id) if customer_id is not None else None
    if record is None and lookup_email:
        record = store.find_idless(env, lookup_email)
        if record is not None and customer_id is not None:
            store.set_id(env, record, customer_id)  # a call with an id claims the row
    if record is not None:
        for name_, value in (("name", name), ("email", email)):
            if value is not UNSET and value and not record[name_]:
                record[name_] = value
        if receipts is not UNSET:
            record["send_email_receipts"] = receipts
        store.changed()
        return store.public(record, expand)

    if plan_id is not UNSET and plan_id not in store.plans:
        raise Refusal(error_response(404, "product_not_found", f"Product {plan_id} not found", env))
    if stripe_id not in (UNSET, None, ""):
        check_stripe_id(stripe_id, env)
    elif create_in_stripe is True:
        stripe_id = random_id("cus_", 14)
    fields = {
        "name": name,
        "email": email,
        "fingerprint": fingerprint,
        "metadata": metadata,
        "stripe_id": stripe_id,
        "send_email_receipts": receipts,
    }
    record = store.new_record(env, customer_id, {k: v for k, v in fields.items() if v is not UNSET})
    if plan_id is not UNSET:
        store.attach(record, store.plans[plan_id], auto_enable=False)
    store.changed()
    return store.public(record, expand)


def get_customer(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    v = Validator(body, env)
    customer_id = v.required("customer_id", str)
    expand = v.expand()
    return store.public(existing(store, env, customer_id), expand)


def list_customers(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    cursor_style = contract.uses_cursor_pagination(version)
    v = Validator(body, env, limit_code="invalid_request" if cursor_style else "invalid_inputs")
    default_limit = contract.CURSOR_DEFAULT_LIMIT if cursor_style else contract.OFFSET_DEFAULT_LIMIT
    limit = v.integer("limit", default_limit, minimum=1, maximum=contract.MAX_LIST_LIMIT)
    search = v.optional("search", str)
    plans = v.optional("plans", list)
    status = v.optional("subscription_status", str, choices=("active", "scheduled"))
    matches = matcher(
        search=search.strip().lower() if isinstance(search, str) else "",
        plans=v.plan_filters(plans),
        status=status if status is not UNSET else None,
    )
    if not cursor_style:
        offset = v.integer("offset", 0, minimum=0)
        everyone = store.ordered(env, "desc")
        filtered = bool(search and search.strip()) or plans or status is not UNSET
        found = [record for record in everyone if matches(record)] if filtered else everyone
        window = found[offset : offset + limit]
        return {
            "list": [store.public(record) for record in window],
            "total": len(window),
            "total_count": len(everyone),
            "total_filtered_count": len(found),
            "limit": limit,
            "offset": offset,
            "has_more": len(window) == limit,
        }
    cursor = v.optional("start_cursor", str)
    order = v.optional("sort_order", str, choices=("asc", "desc"))
    order = "desc" if order is UNSET else order
    wanted_processors = v.optional("processors", list)
    created = v.optional("created_at_range", dict)
    after = None
    if cursor not in (UNSET, ""):
        after = decode_cursor(cursor)
        if after is None:
            raise Refusal(error_response(400, "invalid_cursor", "cursor is not valid base64url", env))
    start = created.get("start") if created is not UNSET else None
    end = created.get("end") if created is not UNSET else None
    page: list[JSONDict] = []
    has_more = False
    for record in store.ordered(env, order):
        here = position(record)
        if after is not None and (here >= after if order == "desc" else here <= after):
            continue
        if start is not None and record["created_at"] < start:
            continue
        if end is not None and record["created_at"] > end:
            continue
        if wanted_processors and not (processors(record) & set(wanted_processors)):
            continue
        if not matches(record):
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append(record)
    next_cursor = encode_cursor(page[-1]) if has_more and page else None
    return {"list": [store.public(record) for record in page], "next_cursor": next_cursor}


def update_customer(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    v = Validator(body, env)
    customer_id = v.required("customer_id", str)
    changes = {
        "name": v.optional("name", str, nullable=True),
        "email": v.optional("email", str, nullable=True, email=True),
        "fingerprint": v.optional("fingerprint", str, nullable=True),
    }
    metadata = v.optional("metadata", dict, nullable=True)
    stripe_id = v.optional("stripe_id", str, nullable=True)
    receipts = v.optional("send_email_receipts", bool)
    new_id = v.optional("new_customer_id", str, customer_id=True)
    record = existing(store, env, customer_id)
    if stripe_id not in (UNSET, None, ""):
        check_stripe_id(stripe_id, env)
    if new_id is not UNSET and new_id != record["id"]:
        if store.find(env, new_id) is not None:
            raise Refusal(
                error_response(
                    409,
                    "customer_already_exists",
                    f"Customer with ID {new_id} already exists, can't change to this ID",
                    env,
                )
            )
        store.set_id(env, record, new_id)
    for name, value in changes.items():
        if value is not UNSET:
            if name == "email":
                store.unindex_idless(env, record)
            record[name] = value or None
    store.index_idless(env, record)
    if metadata:
        for key, value in metadata.items():
            if value is None:
                record["metadata"].pop(key, None)
            else:
                record["metadata"][key] = value
    if stripe_id is not UNSET:
        record["stripe_id"] = stripe_id or None
    if receipts is not UNSET:
        record["send_email_receipts"] = receipts
    store.changed()
    return store.public(record)


def delete_customer(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    v = Validator(body, env)
    customer_id = v.required("customer_id", str)
    v.optional("delete_in_stripe", bool)
    store.remove(env, existing(store, env, customer_id))
    return {"success": True}


HANDLERS: dict[str, Handler] = {
    contract.GET_OR_CREATE: get_or_create_customer,
    contract.GET: get_customer,
    contract.LIST: list_customers,
    contract.UPDATE: update_customer,
    contract.DELETE: delete_customer,
    billing.ATTACH: billing.attach_plan,
}
