"""The list-driven modes of ``autumn_sync``: compare the mirror with one
pass over ``customers.list`` (``--check``), take Autumn's side (``--pull``)
and remove what no local user accounts for (``--prune``).

The batched push and retry engine is :mod:`autumn_django.bulk`; this module
reads Autumn's list instead of the site's users, so its costs are a page
request per 1,000 customers and a query per page.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet

from . import conf, mapping, sync
from .bulk import Summary, chunks, jsonable, write_rows
from .client import AutumnClient
from .exceptions import AutumnError, MappingError, NotFound
from .models import Customer
from .sync import Action

#: The columns a pull writes on rows it refreshes.
REFRESHED_FIELDS = [*Customer.REMOTE_FIELDS, "payload_hash", "updated"]


@dataclass
class Drift:
    """What ``--check`` found: each list is of (user pk, customer id, detail)."""

    missing: list[tuple[Any, str]] = field(default_factory=list)
    differing: list[tuple[Any, str, list[str]]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    idless: int = 0
    in_sync: int = 0
    invalid: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.missing or self.differing or self.orphans or self.invalid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "missing": [{"user": jsonable(u), "customer_id": c} for u, c in self.missing],
            "differing": [{"user": jsonable(u), "customer_id": c, "fields": f} for u, c, f in self.differing],
            "orphans": self.orphans,
            "idless_customers": self.idless,
            "invalid": [{"user": jsonable(u), "error": e} for u, e in self.invalid],
        }


def remote_index(client: AutumnClient) -> tuple[dict[str, dict[str, Any]], int]:
    """One pass over customers.list: id -> the fields we compare, and how
    many customers have no id (made by email only)."""
    index: dict[str, dict[str, Any]] = {}
    idless = 0
    for customer in client.iter_customers():
        if customer.get("id") is None:
            idless += 1
            continue
        index[customer["id"]] = {name: customer.get(name) for name in mapping.CUSTOMER_FIELDS}
    return index, idless


def check(client: AutumnClient, users: QuerySet[Any], batch_size: int = 500) -> Drift:
    """Compare every selected user with Autumn, reading only: a user whose
    customer is missing, one whose fields differ, and customers no user
    accounts for (orphans)."""
    remote, idless = remote_index(client)
    drift = Drift(idless=idless)
    keep = conf.load().delete_policy == "keep"
    for user in users.iterator(chunk_size=batch_size):
        if not mapping.should_sync(user):
            if keep:  # its customer may stay; not an orphan
                try:
                    remote.pop(mapping.payload_for(user).customer_id, None)
                except MappingError:
                    pass
            continue
        try:
            payload = mapping.payload_for(user)
        except MappingError as error:
            drift.invalid.append((user.pk, str(error)))
            continue
        held = remote.pop(payload.customer_id, None)
        if held is None:
            drift.missing.append((user.pk, payload.customer_id))
            continue
        differences = sync.differences(payload.fields, held)
        if differences:
            drift.differing.append((user.pk, payload.customer_id, sorted(differences)))
        else:
            drift.in_sync += 1
    drift.orphans = sorted(remote)
    return drift


def pull(client: AutumnClient, *, batch_size: int = 500, dry_run: bool = False) -> Summary:
    """Refresh the mirror's remote columns from customers.list, and link
    customers that already exist to the local users they belong to."""
    summary = Summary(dry_run=dry_run)
    before = Counter(client.calls)
    env = mapping.current_env()
    unlinked: dict[str, Any] = {}
    for user in get_user_model().objects.filter(autumn_customer__isnull=True).iterator(chunk_size=batch_size):
        try:
            if mapping.should_sync(user):
                unlinked[mapping.payload_for(user).customer_id] = user
        except MappingError:
            continue
    for page in chunks(client.iter_customers(), batch_size):
        page = [customer for customer in page if customer.get("id")]
        rows = {
            row.customer_id: row
            for row in Customer.objects.filter(
                env=env, customer_id__in=[c["id"] for c in page]
            ).select_related("user")
        }
        refreshed, linked = [], []
        for customer in page:
            row = rows.get(customer["id"])
            if row is None:
                user = unlinked.pop(customer["id"], None)
                if user is None:
                    continue
                row = Customer(user=user, env=env, state=Customer.State.SYNCED)
                linked.append(row)
            else:
                refreshed.append(row)
            for name, value in sync.refreshed_values(customer).items():
                setattr(row, name, value)
        summary.counts["refreshed"] += len(refreshed)
        summary.counts["linked"] += len(linked)
        if not dry_run:
            with transaction.atomic():
                write_rows(refreshed, REFRESHED_FIELDS)
                Customer.objects.bulk_create(linked, batch_size=batch_size)
    return summary.finish(client, before)


def prune(
    client: AutumnClient, orphans: list[str], *, concurrency: int = 32, dry_run: bool = False
) -> Summary:
    """Delete remote customers that no local user accounts for."""
    summary = Summary(dry_run=dry_run)
    if dry_run:
        summary.counts["would_delete"] = len(orphans)
        return summary
    before = Counter(client.calls)

    def delete(customer_id: str) -> Exception | None:
        try:
            client.delete_customer(customer_id)
        except NotFound:
            pass
        except AutumnError as error:
            return error
        return None

    with ThreadPoolExecutor(concurrency, thread_name_prefix="autumn-prune") as pool:
        for customer_id, error in zip(orphans, pool.map(delete, orphans), strict=True):
            if error is None:
                summary.counts[Action.DELETED] += 1
            else:
                summary.add_error(None, customer_id, error)
    Customer.objects.filter(customer_id__in=orphans, user__isnull=True).delete()
    return summary.finish(client, before)
