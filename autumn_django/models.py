"""The local mirror of Autumn customers: one row per synced object (a user,
a team: any model registered as a customer source).

The row is written in the same transaction as the user's change, before any
call to Autumn, so a change is never lost when Autumn is slow or down: the
row says what still has to happen (``state``) and what went wrong last
(``last_error``). Autumn's fields are copied into columns for the admin and
for queries; the whole last response is kept in ``data`` so a field Autumn
adds later needs no migration (as dj-stripe does).
"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone

if TYPE_CHECKING:
    from .mapping import Payload


def active_plan_ids(customer: dict[str, Any]) -> list[str]:
    """The plans one of Autumn's customer objects has now: its active
    subscriptions (a pending cancellation included, until it expires) and
    its purchases, each once. One rule for the mirror, its admin and
    Autumn's list in the admin."""
    subscriptions = customer.get("subscriptions")
    purchases = customer.get("purchases")
    entries = [
        *(
            entry
            for entry in (subscriptions if isinstance(subscriptions, list) else [])
            if isinstance(entry, dict) and entry.get("status") == "active"
        ),
        *(entry for entry in (purchases if isinstance(purchases, list) else []) if isinstance(entry, dict)),
    ]
    ids = [entry.get("plan_id") for entry in entries]
    return [plan for plan in dict.fromkeys(ids) if isinstance(plan, str)]


def object_key(obj: models.Model) -> str:
    """``obj``'s primary key as the mirror stores it: the text of the key's
    Python value, so that a UUID given as hex or in capitals and the same
    UUID read back from the database are one key."""
    return str(obj._meta.pk.to_python(obj.pk))


class CustomerQuerySet(models.QuerySet["Customer"]):
    """The mirror's named selections, shared by the engine, the command and
    the admin so that each rule is written once."""

    def outbox(self) -> CustomerQuerySet:
        """Rows with work left: pending or deleting (due now), or failed with
        a retry due. A failed row without ``next_attempt_at`` waits for a fix."""
        now = timezone.now()
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        return self.filter(
            (Q(state__in=[Customer.State.PENDING, Customer.State.DELETING]) & due)
            | Q(state__in=[Customer.State.FAILED, Customer.State.GONE], next_attempt_at__lte=now)
        )

    def orphans(self) -> CustomerQuerySet:
        """Rows whose object is gone, waiting for Autumn to confirm the delete
        (``deleting``) or for the delete to be confirmed again (``gone``)."""
        return self.filter(state__in=[Customer.State.DELETING, Customer.State.GONE], object_id__isnull=True)

    def of(self, obj: models.Model) -> CustomerQuerySet:
        """The row of ``obj`` (a user, a team...): ``.first()`` is it or None."""
        return self.filter(content_type=ContentType.objects.get_for_model(obj), object_id=object_key(obj))

    def of_model(self, model: type[models.Model]) -> CustomerQuerySet:
        """The rows linked to objects of ``model``."""
        return self.filter(content_type=ContentType.objects.get_for_model(model))


class Customer(models.Model):
    class State(models.TextChoices):  # labels are the names, capitalised
        PENDING = "pending"
        SYNCED = "synced"
        FAILED = "failed"
        DELETING = "deleting"
        # Deleted at Autumn while a push may still be on its way there: kept
        # as a tombstone until next_attempt_at, then deleted once more.
        GONE = "gone"

    class Env(models.TextChoices):
        SANDBOX = "sandbox"
        LIVE = "live"

    # The object the customer is for, linked generically so that any model
    # can be a customer (text, so integer and UUID keys both fit). When the
    # object is deleted the link is cleared (object_id NULL) and the row
    # stays, "deleting", until Autumn has confirmed the remote delete.
    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.CharField(max_length=255, null=True, blank=True)
    source = GenericForeignKey("content_type", "object_id")
    env = models.CharField(max_length=8, choices=Env.choices)
    customer_id = models.CharField(
        max_length=255, help_text="The customer's id at Autumn (the one last pushed)."
    )

    name = models.CharField(max_length=255, null=True, blank=True)
    email = models.CharField(max_length=254, null=True, blank=True)
    fingerprint = models.CharField(max_length=255, null=True, blank=True)
    stripe_id = models.CharField(max_length=255, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    remote_created_at = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(null=True, blank=True, help_text="Autumn's last full answer for this customer.")

    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    last_error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    pushed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last push to Autumn started (it may still be on its way)."
    )
    version = models.PositiveBigIntegerField(
        default=0,
        help_text="Bumped by every local change; a sync records its result only if it is unchanged.",
    )
    payload_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="SHA-256 of the last payload Autumn accepted."
    )

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = CustomerQuerySet.as_manager()

    #: The columns that hold what Autumn said (see :meth:`remote_columns`).
    REMOTE_FIELDS = (
        "customer_id", "env", "name", "email", "fingerprint", "stripe_id", "metadata",
        "remote_created_at", "data", "synced_at",
    )  # fmt: skip

    class Meta:
        verbose_name = "Autumn customer mirror"
        constraints = [
            models.UniqueConstraint(fields=["env", "customer_id"], name="autumn_customer_unique_id_per_env"),
            # One row per object; also the index every lookup by object uses.
            models.UniqueConstraint(
                fields=["content_type", "object_id"], name="autumn_customer_unique_source"
            ),
        ]
        indexes = [
            # The outbox: rows still to push, oldest due first.
            models.Index(fields=["state", "next_attempt_at"], name="autumn_customer_outbox"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} ({self.env}, {self.state})"

    @property
    def user(self) -> Any:
        """The row's user, when its object is one (``source`` for any model)."""
        if self.content_type_id is None or self.object_id is None:
            return None
        if self.content_type_id != ContentType.objects.get_for_model(get_user_model()).pk:
            return None
        return self.source

    @property
    def is_known_remotely(self) -> bool:
        """Autumn has confirmed this customer at least once (we hold its answer,
        written with ``synced_at``; reading this needs no JSON column)."""
        return self.synced_at is not None

    #: The columns :meth:`holds` reads.
    HOLDS_FIELDS = ("state", "synced_at", "env", "customer_id", "payload_hash")

    def holds(self, payload: Payload, env: str) -> bool:
        """Autumn already holds ``payload`` for this row: the last push it
        accepted was this very payload, under this id, in this environment.
        A save that changes nothing Autumn sees (``last_login``) stops here."""
        return (
            self.state == Customer.State.SYNCED
            and self.is_known_remotely
            and self.env == env
            and self.customer_id == payload.customer_id
            and self.payload_hash == payload.hash
        )

    # --- billing state, read from Autumn's last answer (no query, no request) ---

    @property
    def active_plan_ids(self) -> list[str]:
        """The plans the customer has now (see :func:`active_plan_ids`), from
        Autumn's last answer (``data``)."""
        return active_plan_ids(self.data or {})

    def has_plan(self, plan_id: str) -> bool:
        """The customer has ``plan_id`` now (see :attr:`active_plan_ids`)."""
        return plan_id in self.active_plan_ids

    def balance(self, feature_id: str) -> dict[str, Any] | None:
        """Autumn's balance of ``feature_id`` (``granted``, ``remaining``,
        ``usage``, ``unlimited``, ``next_reset_at``...), or None."""
        balances = (self.data or {}).get("balances") or {}
        value = balances.get(feature_id) if isinstance(balances, dict) else None
        return value if isinstance(value, dict) else None

    def has_feature(self, feature_id: str) -> bool:
        """The customer may use ``feature_id``: a flag, an unlimited balance,
        or a balance with some left."""
        data = self.data or {}
        if feature_id in (data.get("flags") or {}):
            return True
        balance = self.balance(feature_id)
        if balance is None:
            return False
        remaining = balance.get("remaining")
        return bool(balance.get("unlimited")) or (isinstance(remaining, (int, float)) and remaining > 0)

    @staticmethod
    def remote_columns(customer: dict[str, Any]) -> dict[str, Any]:
        """The row's columns for one of Autumn's customer objects (validated
        by the client). The text columns are display copies, cut to what
        the columns hold; ``data`` keeps Autumn's answer whole."""
        return {
            "customer_id": customer.get("id"),
            "env": customer.get("env"),
            "name": _display(customer.get("name"), 255),
            "email": _display(customer.get("email"), 254),
            "fingerprint": _display(customer.get("fingerprint"), 255),
            "stripe_id": _display(customer.get("stripe_id"), 255),
            "metadata": customer.get("metadata") or {},
            "remote_created_at": _moment(customer.get("created_at")),
            "data": customer,
            "synced_at": timezone.now(),
        }


def _display(value: Any, limit: int) -> str | None:
    """A text column's copy of one of Autumn's fields: a string cut to
    ``limit`` characters with NUL characters removed (PostgreSQL refuses
    them), or None."""
    if value is None:
        return None
    return str(value).replace("\x00", "")[:limit]


def _moment(value: Any) -> datetime.datetime | None:
    """One of Autumn's times (epoch milliseconds) as a datetime, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def plan_columns(kind: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A :class:`CustomerPlan`'s columns for one of Autumn's subscriptions or
    purchases (a function, so that a migration can use it too)."""
    return {
        "kind": kind,
        "plan_id": _display(entry.get("plan_id"), 255) or "",
        "status": _display(entry.get("status"), 32) or ("active" if kind == "purchase" else ""),
        "past_due": entry.get("past_due") is True,
        "quantity": _number(entry.get("quantity")),
        **{name: _moment(entry.get(name)) for name in PLAN_TIMES},
    }


#: The times of a subscription or purchase, as Autumn names them.
PLAN_TIMES = (
    "started_at", "canceled_at", "expires_at", "trial_ends_at", "current_period_start", "current_period_end",
)  # fmt: skip


def feature_columns(kind: str, feature_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A :class:`CustomerFeature`'s columns for one of Autumn's balances or flags."""
    return {
        "kind": kind,
        "feature_id": _display(feature_id, 255) or "",
        "granted": _number(entry.get("granted")),
        "remaining": _number(entry.get("remaining")),
        "usage": _number(entry.get("usage")),
        "unlimited": entry.get("unlimited") is True,
        "next_reset_at": _moment(entry.get("next_reset_at")),
        "plan_id": _display(entry.get("plan_id"), 255) or "",
        "expires_at": _moment(entry.get("expires_at")),
    }


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class CustomerPlan(models.Model):
    """One of a customer's subscriptions or purchases, as Autumn last said:
    a copy of ``Customer.data`` in columns, so that plans can be queried
    across customers (``Customer.objects.filter(plans__plan_id="pro",
    plans__status="active")``) and filtered in the admin. Rewritten whenever
    the customer's billing in Autumn's answer changes."""

    class Kind(models.TextChoices):
        SUBSCRIPTION = "subscription"
        PURCHASE = "purchase"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="plans")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    plan_id = models.CharField(max_length=255)
    status = models.CharField(
        max_length=32, blank=True, default="", help_text="active, scheduled, expired..."
    )
    past_due = models.BooleanField(default=False)
    quantity = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Autumn plan"
        indexes = [models.Index(fields=["plan_id", "status"], name="autumn_plan_by_id")]

    def __str__(self) -> str:
        return f"{self.plan_id} ({self.status or self.kind})"

    @classmethod
    def from_remote(cls, customer_pk: int, kind: str, entry: dict[str, Any]) -> CustomerPlan:
        return cls(customer_id=customer_pk, **plan_columns(kind, entry))


class CustomerFeature(models.Model):
    """One of a customer's balances or flags, as Autumn last said, in
    columns for queries (``Customer.objects.filter(features__feature_id=
    "sso")``); rewritten with :class:`CustomerPlan`."""

    class Kind(models.TextChoices):
        BALANCE = "balance"
        FLAG = "flag"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="features")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    feature_id = models.CharField(max_length=255)
    granted = models.FloatField(null=True, blank=True)
    remaining = models.FloatField(null=True, blank=True)
    usage = models.FloatField(null=True, blank=True)
    unlimited = models.BooleanField(default=False)
    next_reset_at = models.DateTimeField(null=True, blank=True)
    plan_id = models.CharField(max_length=255, blank=True, default="", help_text="A flag's plan.")
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Autumn feature"
        constraints = [
            models.UniqueConstraint(fields=["customer", "kind", "feature_id"], name="autumn_feature_once")
        ]
        indexes = [models.Index(fields=["feature_id"], name="autumn_feature_by_id")]

    def __str__(self) -> str:
        return f"{self.feature_id} ({self.kind})"

    @classmethod
    def from_remote(
        cls, customer_pk: int, kind: str, feature_id: str, entry: dict[str, Any]
    ) -> CustomerFeature:
        return cls(customer_id=customer_pk, **feature_columns(kind, feature_id, entry))


class RemoteCustomer(models.Model):
    """No table: it gives the admin an entry for Autumn's own customer list
    ("Autumn customers") and the permissions that guard it
    (``view_remotecustomer`` to browse, ``delete_remotecustomer`` to delete in
    Autumn). The page itself is drawn from the API, see admin.py."""

    class Meta:
        managed = False
        verbose_name = "Autumn customer"
        verbose_name_plural = "Autumn customers"
        default_permissions = ("view", "delete")


class WebhookEvent(models.Model):
    """One delivery from Autumn (through Svix), stored before it is
    processed, so a delivery is acknowledged at once and never lost: the
    processing task works from this row, and retries it when it fails.

    ``svix_id`` is the same on every retry of one message, so it is unique:
    a repeated delivery finds its row and does nothing.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        FAILED = "failed"
        IGNORED = "ignored"  # a type autumn-django does not know: stored and acknowledged

    svix_id = models.CharField(max_length=255, unique=True, help_text="Svix's message id (svix-id).")
    type = models.CharField(max_length=100)
    customer_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    payload = models.JSONField(help_text="The delivery's body, as Autumn sent it.")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    state = models.CharField(max_length=9, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Autumn webhook event"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="autumn_webhook_outbox")]

    def __str__(self) -> str:
        return f"{self.type} {self.customer_id or '-'} ({self.state})"
