"""The customer's billing state in tables: subscriptions and purchases
(:class:`~autumn_django.models.CustomerPlan`), balances and flags
(:class:`~autumn_django.models.CustomerFeature`), copied from Autumn's
customer object whenever the mirror stores one (a push's answer, a refresh,
a webhook's refresh, a pull).

``Customer.data`` keeps the whole answer and the read helpers
(``customer.has_plan("pro")``) read it without a query; the tables exist so
that a site can ask across customers ("everyone on pro whose trial ends this
week") and the admin can filter by plan. They are rewritten only when the
billing part of the answer changed, so a push that changes a name costs no
billing write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .models import CustomerFeature, CustomerPlan

#: The keys of Autumn's customer object that hold billing state.
BILLING_KEYS = ("subscriptions", "purchases", "balances", "flags")


def billing_of(data: dict[str, Any] | None) -> str:
    """The billing part of a customer object, as comparable text; a customer
    with none (a new one, or no answer yet) is the same as empty lists."""
    data = data or {}
    part = {
        key: data.get(key) or ([] if key in ("subscriptions", "purchases") else {}) for key in BILLING_KEYS
    }
    return json.dumps(part, sort_keys=True, default=str)


def changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    return billing_of(before) != billing_of(after)


def store(customers: Iterable[tuple[int, dict[str, Any] | None]], using: str = "default") -> None:
    """Rewrite the plan and feature rows of each ``(row pk, Autumn's customer
    object)``: a DELETE per table and at most two INSERTs for the lot."""
    pairs = [(pk, data) for pk, data in customers if pk is not None]
    if not pairs:
        return
    pks = [pk for pk, _ in pairs]
    CustomerPlan.objects.using(using).filter(customer_id__in=pks).delete()
    CustomerFeature.objects.using(using).filter(customer_id__in=pks).delete()
    plans: list[CustomerPlan] = []
    features: list[CustomerFeature] = []
    for pk, data in pairs:
        more_plans, more_features = rows_of(pk, data)
        plans += more_plans
        features += more_features
    CustomerPlan.objects.using(using).bulk_create(plans)
    CustomerFeature.objects.using(using).bulk_create(features)


def rows_of(pk: int | None, data: Any) -> tuple[list[CustomerPlan], list[CustomerFeature]]:
    """The plan and feature rows (unsaved) for one of Autumn's customer
    objects: what :func:`store` writes, and what the admin shows with no
    query. A feature id is kept once, as the table's unique key needs."""
    data = data if isinstance(data, dict) else {}
    plans: list[CustomerPlan] = []
    features: list[CustomerFeature] = []
    for kind, key in (
        (CustomerPlan.Kind.SUBSCRIPTION, "subscriptions"),
        (CustomerPlan.Kind.PURCHASE, "purchases"),
    ):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("plan_id"), str):
                plans.append(CustomerPlan.from_remote(pk, kind, entry))  # type: ignore[arg-type]
    for kind, key in ((CustomerFeature.Kind.BALANCE, "balances"), (CustomerFeature.Kind.FLAG, "flags")):
        entries = data.get(key)
        seen: set[str] = set()
        for feature_id, entry in entries.items() if isinstance(entries, dict) else []:
            if isinstance(entry, dict) and isinstance(feature_id, str) and feature_id[:255] not in seen:
                seen.add(feature_id[:255])
                features.append(CustomerFeature.from_remote(pk, kind, feature_id, entry))  # type: ignore[arg-type]
    return plans, features
