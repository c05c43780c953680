"""Enough of Autumn's billing to send real events: a plan attached to a
customer, canceled and expired, each change noted as the webhooks Autumn
sends for it.

The operations read and write the store's records and note their events with
:meth:`~.store.Store.emit`; the emulator sends them (:mod:`.webhooks`) once
the write is done. Callers hold the emulator's lock. Failures raise
:class:`BillingError`, which the route answers as Autumn's error body.

Each change sends two events, in this order:

* ``billing.updated``: ``{"customer_id", "entity_id": null, "plan_changes":
  [{"action", "subscription": {...}}], "previous_attributes", "tags": []}``,
  ``action`` one of ``activated``, ``updated``, ``expired`` (``scheduled``
  is never sent: nothing here schedules). A one-off plan's change carries
  ``"purchase": {"plan_id", "status", "expires_at"}`` instead.
* ``customer.products.updated`` (the legacy event Autumn still sends):
  ``{"scenario", "customer", "entity": null, "updated_product"}``.

Times are epoch milliseconds of the emulator's clock.

Contract notes: choices made where Autumn's billing contract is silent, or
where the emulator does less.

* ``billing.attach`` activates at once: no Stripe, no checkout, so
  ``payment_url``, ``invoice`` and ``required_action`` are null. The period
  is a calendar month from the attach (clamped to the month's last day).
* Attaching a plan the customer holds is 409 ``plan_already_attached``
  (Autumn's code); when its cancellation is pending, the attach renews it
  instead (``updated``, scenario ``renew``).
* Plans have no groups here, so an attach is always scenario ``new``
  (never ``upgrade`` or ``downgrade``).
* Cancel and expire are emulator methods, not routes (Autumn's is
  ``billing.update`` with ``cancel_action``, not served). A cancel keeps the
  subscription active until ``current_period_end`` (``canceled_at`` now,
  ``expires_at`` the period's end: ``updated``, scenario ``cancel``); with
  ``immediately`` it expires now (``expired``, scenario ``cancel``).
  Canceling again changes nothing and sends nothing.
* An expired subscription stays in ``subscriptions`` with ``status:
  "expired"`` until the plan is attached again; an expired purchase leaves
  ``purchases``. A subscription or purchase not held is 404
  ``cus_product_not_found``.
* Only these operations send events: customers made with plans
  (``customers.get_or_create``, default plans, ``add_customer(plans=...)``)
  send none.
* ``previous_attributes`` holds the earlier values of the fields a change
  set (``{}`` for an activation).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone
from typing import Any

from ..contract import ApiVersion
from .store import Plan, Store, random_id
from .validation import Validator
from .wire import JSONDict, Refusal, Response, error_response

ATTACH = "billing.attach"
#: The billing routes the emulator serves.
ROUTES = (ATTACH,)

BILLING_UPDATED = "billing.updated"
PRODUCTS_UPDATED = "customer.products.updated"

#: The keys of a subscription in a ``billing.updated`` plan change.
SUBSCRIPTION_FIELDS = (
    "plan_id",
    "status",
    "past_due",
    "started_at",
    "canceled_at",
    "expires_at",
    "trial_ends_at",
    "current_period_start",
    "current_period_end",
)


class BillingError(Exception):
    """A billing operation Autumn would refuse: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self, env: str) -> Response:
        return error_response(self.status, self.code, self.message, env)


def add_month(ms: int) -> int:
    """The same moment a calendar month later (the 31st of January is
    followed by the last day of February)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return round(moment.replace(year=year, month=month, day=day).timestamp() * 1000)


def _now(store: Store) -> int:
    return int(store.clock() * 1000)


def _customer(store: Store, env: str, customer_id: str) -> JSONDict:
    record = store.find(env, customer_id)
    if record is None:
        raise BillingError(404, "customer_not_found", f"Customer {customer_id} not found")
    return record


def _plan(store: Store, plan_id: str) -> Plan:
    plan = store.plans.get(plan_id)
    if plan is None:
        raise BillingError(404, "product_not_found", f"Product {plan_id} not found")
    return plan


def _live(record: JSONDict, plan_id: str) -> JSONDict | None:
    """The customer's subscription to ``plan_id`` that has not expired."""
    for subscription in record["subscriptions"]:
        if subscription["plan_id"] == plan_id and subscription["status"] != "expired":
            return subscription
    return None


def _not_held(customer_id: str, plan_id: str) -> BillingError:
    return BillingError(
        404, "cus_product_not_found", f"Customer {customer_id} does not have an active plan {plan_id}"
    )


def _changed(subscription: JSONDict, **values: Any) -> JSONDict:
    """Set ``values`` on the subscription; the previous values of those that changed."""
    previous = {key: subscription[key] for key, value in values.items() if subscription[key] != value}
    subscription.update(values)
    return previous


# --- the operations ---------------------------------------------------------------


def attach(store: Store, env: str, customer_id: str, plan_id: str) -> JSONDict:
    """Attach ``plan_id`` to the customer, active at once; the record."""
    record = _customer(store, env, customer_id)
    plan = _plan(store, plan_id)
    now = _now(store)
    if plan.one_off:
        purchase = {
            "id": random_id("cus_prod_", 16),
            "plan_id": plan.id,
            "expires_at": None,
            "started_at": now,
            "quantity": 1,
        }
        record["purchases"].append(purchase)
        _note(store, env, record, plan, _purchase_change("activated", purchase, "active"), {}, "new")
        return record
    live = _live(record, plan.id)
    if live is not None:
        if live["canceled_at"] is None:
            raise BillingError(
                409,
                "plan_already_attached",
                f"Cannot attach because the customer's current product '{plan.name or plan.id}' "
                "is the same as the product being attached",
            )
        previous = _changed(live, canceled_at=None, expires_at=None)
        _note(store, env, record, plan, _subscription_change("updated", live), previous, "renew")
        return record
    record["subscriptions"][:] = [sub for sub in record["subscriptions"] if sub["plan_id"] != plan.id]
    subscription = store.attach(record, plan, auto_enable=False)
    assert subscription is not None  # none of this plan is left
    subscription.update(started_at=now, current_period_start=now, current_period_end=add_month(now))
    _note(store, env, record, plan, _subscription_change("activated", subscription), {}, "new")
    return record


def cancel(store: Store, env: str, customer_id: str, plan_id: str, *, immediately: bool = False) -> JSONDict:
    """Cancel the customer's subscription to ``plan_id``: at the end of its
    period (active until then), or ``immediately``; the record."""
    record = _customer(store, env, customer_id)
    subscription = _live(record, plan_id)
    if subscription is None:
        raise _not_held(customer_id, plan_id)
    plan = store.plans.get(plan_id) or Plan(plan_id)
    now = _now(store)
    if immediately:
        previous = _changed(
            subscription, status="expired", canceled_at=subscription["canceled_at"] or now, expires_at=now
        )
        _note(store, env, record, plan, _subscription_change("expired", subscription), previous, "cancel")
    elif subscription["canceled_at"] is None:
        previous = _changed(subscription, canceled_at=now, expires_at=subscription["current_period_end"])
        _note(store, env, record, plan, _subscription_change("updated", subscription), previous, "cancel")
    store.changed()
    return record


def expire(store: Store, env: str, customer_id: str, plan_id: str) -> JSONDict:
    """End the customer's subscription to (or purchase of) ``plan_id`` now,
    as at the end of a canceled period or a failed renewal; the record."""
    record = _customer(store, env, customer_id)
    plan = store.plans.get(plan_id) or Plan(plan_id)
    now = _now(store)
    subscription = _live(record, plan_id)
    if subscription is not None:
        previous = _changed(subscription, status="expired", expires_at=now)
        _note(store, env, record, plan, _subscription_change("expired", subscription), previous, "expired")
    else:
        purchase = next((p for p in record["purchases"] if p["plan_id"] == plan_id), None)
        if purchase is None:
            raise _not_held(customer_id, plan_id)
        record["purchases"].remove(purchase)
        previous = _changed(purchase, expires_at=now)
        _note(store, env, record, plan, _purchase_change("expired", purchase, "expired"), previous, "expired")
    store.changed()
    return record


# --- the events ---------------------------------------------------------------------


def _subscription_change(action: str, subscription: JSONDict) -> JSONDict:
    return {"action": action, "subscription": {key: subscription[key] for key in SUBSCRIPTION_FIELDS}}


def _purchase_change(action: str, purchase: JSONDict, status: str) -> JSONDict:
    return {
        "action": action,
        "purchase": {"plan_id": purchase["plan_id"], "status": status, "expires_at": purchase["expires_at"]},
    }


def product_object(plan: Plan, env: str) -> JSONDict:
    """A plan as ``customer.products.updated`` names it: a product."""
    return {
        "id": plan.id,
        "name": plan.name or plan.id,
        "group": None,
        "env": env,
        "is_add_on": plan.add_on,
        "is_default": plan.default,
        "version": plan.version,
        "items": [],
        "free_trial": None,
    }


def _note(
    store: Store,
    env: str,
    record: JSONDict,
    plan: Plan,
    change: JSONDict,
    previous: JSONDict,
    scenario: str,
) -> None:
    """Note the change's two events (the store copies them)."""
    store.changed()
    store.emit(
        env,
        BILLING_UPDATED,
        {
            "customer_id": record["id"],
            "entity_id": None,
            "plan_changes": [change],
            "previous_attributes": previous,
            "tags": [],
        },
    )
    store.emit(
        env,
        PRODUCTS_UPDATED,
        {
            "scenario": scenario,
            "customer": store.public(record),
            "entity": None,
            "updated_product": product_object(plan, env),
        },
    )


# --- the route ----------------------------------------------------------------------


def attach_plan(store: Store, env: str, version: ApiVersion, body: JSONDict) -> JSONDict:
    """``POST /v1/billing.attach``: ``{"customer_id", "plan_id"}``."""
    v = Validator(body, env)
    customer_id = v.required("customer_id", str)
    plan_id = v.required("plan_id", str)
    try:
        record = attach(store, env, customer_id, plan_id)
    except BillingError as error:
        raise Refusal(error.response(env)) from None
    return {
        "customer_id": record["id"] if record["id"] is not None else record["internal_id"],
        "plan_id": plan_id,
        "success": True,
        "code": "plan_attached",
        "message": f"Successfully attached plan {plan_id} to customer {customer_id}",
        "payment_url": None,
        "invoice": None,
        "required_action": None,
    }
