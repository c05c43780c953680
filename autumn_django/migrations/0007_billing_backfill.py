# The billing tables of 0006 filled from what the mirror already holds:
# rows synced before them keep Autumn's last answer in `data`, and their
# plans must be queryable (and filterable in the admin) at once, not only
# after Autumn's answer next changes. The reading of Autumn's objects is
# copied here, frozen, as a migration must not follow later code.

import datetime
import math

from django.db import migrations

BATCH = 1000
TIMES = ("started_at", "canceled_at", "expires_at", "trial_ends_at", "current_period_start", "current_period_end")


def _text(value, limit):
    return None if value is None else str(value).replace("\x00", "")[:limit]


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _moment(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _rows(pk, data, Plan, Feature):
    plans, features = [], []
    for kind, key in (("subscription", "subscriptions"), ("purchase", "purchases")):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("plan_id"), str):
                plans.append(
                    Plan(
                        customer_id=pk,
                        kind=kind,
                        plan_id=_text(entry.get("plan_id"), 255) or "",
                        status=_text(entry.get("status"), 32) or ("active" if kind == "purchase" else ""),
                        past_due=entry.get("past_due") is True,
                        quantity=_number(entry.get("quantity")),
                        **{name: _moment(entry.get(name)) for name in TIMES},
                    )
                )
    for kind, key in (("balance", "balances"), ("flag", "flags")):
        entries = data.get(key)
        seen = set()
        for feature_id, entry in entries.items() if isinstance(entries, dict) else []:
            if isinstance(entry, dict) and isinstance(feature_id, str) and feature_id[:255] not in seen:
                seen.add(feature_id[:255])
                features.append(
                    Feature(
                        customer_id=pk,
                        kind=kind,
                        feature_id=_text(feature_id, 255) or "",
                        granted=_number(entry.get("granted")),
                        remaining=_number(entry.get("remaining")),
                        usage=_number(entry.get("usage")),
                        unlimited=entry.get("unlimited") is True,
                        next_reset_at=_moment(entry.get("next_reset_at")),
                        plan_id=_text(entry.get("plan_id"), 255) or "",
                        expires_at=_moment(entry.get("expires_at")),
                    )
                )
    return plans, features


def backfill(apps, schema_editor):
    Customer = apps.get_model("autumn_django", "Customer")
    Plan = apps.get_model("autumn_django", "CustomerPlan")
    Feature = apps.get_model("autumn_django", "CustomerFeature")
    db = schema_editor.connection.alias
    rows = Customer.objects.using(db).filter(data__isnull=False).order_by("pk").values_list("pk", "data")
    plans, features = [], []
    for pk, data in rows.iterator(chunk_size=BATCH):
        if isinstance(data, dict):
            more_plans, more_features = _rows(pk, data, Plan, Feature)
            plans += more_plans
            features += more_features
        if len(plans) + len(features) >= BATCH:
            Plan.objects.using(db).bulk_create(plans)
            Feature.objects.using(db).bulk_create(features)
            plans, features = [], []
    Plan.objects.using(db).bulk_create(plans)
    Feature.objects.using(db).bulk_create(features)


class Migration(migrations.Migration):
    dependencies = [("autumn_django", "0006_billing_state")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True)]
