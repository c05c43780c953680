"""The list-driven modes of ``autumn_sync``: compare the mirror with one
pass over ``customers.list`` (``--check``), take Autumn's side (``--pull``)
and remove what no local object accounts for (``--prune``).

The batched push and retry engine is :mod:`autumn_django.bulk`; this module
reads Autumn's list instead of the site's objects, so its costs are a page
request per 1,000 customers and a query per page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import QuerySet

from . import billing, conf, mapping, sources, sync
from .bulk import BulkSync, Summary, chunks, describe, write_rows
from .client import AutumnClient
from .exceptions import AutumnError, MappingError, NotFound
from .models import Customer
from .sync import Action

#: The columns a pull writes on rows it refreshes.
REFRESHED_FIELDS = [*Customer.REMOTE_FIELDS, "payload_hash", "updated"]


@dataclass
class Drift:
    """What ``--check`` found: each list is of (the object as messages name
    it, ``user 5`` or ``team 3``; customer id; detail)."""

    missing: list[tuple[Any, str]] = field(default_factory=list)
    differing: list[tuple[Any, str, list[str]]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    idless: int = 0
    in_sync: int = 0
    invalid: list[tuple[Any, str]] = field(default_factory=list)
    #: What a repair pushes, by source label: (pk, customer id), missing or differing.
    to_repair: dict[str, list[tuple[Any, str]]] = field(default_factory=dict)

    @property
    def repairable(self) -> bool:
        return bool(self.missing or self.differing)

    @property
    def found(self) -> bool:
        return bool(self.missing or self.differing or self.orphans or self.invalid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "missing": [{"object": o, "customer_id": c} for o, c in self.missing],
            "differing": [{"object": o, "customer_id": c, "fields": f} for o, c, f in self.differing],
            "orphans": self.orphans,
            "idless_customers": self.idless,
            "invalid": [{"object": o, "error": e} for o, e in self.invalid],
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


def check(client: AutumnClient, selections: Iterable[QuerySet[Any]], batch_size: int = 500) -> Drift:
    """Compare every selected object (a queryset per source) with Autumn,
    reading only: an object whose customer is missing, one whose fields
    differ, and customers no object accounts for (orphans)."""
    remote, idless = remote_index(client)
    drift = Drift(idless=idless)
    keep = conf.load().delete_policy == "keep"
    for objects in selections:
        source = sources.registry().for_model(objects.model)
        for obj in objects.iterator(chunk_size=batch_size):
            who = describe(obj)
            try:
                qualifies = mapping.should_sync(obj, source)
            except MappingError as error:
                drift.invalid.append((who, str(error)))
                continue
            if not qualifies:
                if keep:  # its customer may stay; not an orphan
                    try:
                        remote.pop(mapping.payload_for(obj, source).customer_id, None)
                    except MappingError:
                        pass
                continue
            try:
                payload = mapping.payload_for(obj, source)
            except MappingError as error:
                drift.invalid.append((who, str(error)))
                continue
            held = remote.pop(payload.customer_id, None)
            differences = sync.differences(payload.fields, held) if held is not None else {}
            if held is None:
                drift.missing.append((who, payload.customer_id))
            elif differences:
                drift.differing.append((who, payload.customer_id, sorted(differences)))
            else:
                drift.in_sync += 1
                continue
            assert source is not None
            drift.to_repair.setdefault(source.label, []).append((obj.pk, payload.customer_id))
    drift.orphans = sorted(remote)
    return drift


def repair(client: AutumnClient, drift: Drift, *, concurrency: int = 32, batch_size: int = 500) -> Summary:
    """Fix exactly what :func:`check` found: ``get_or_create`` for each
    customer missing at Autumn, ``update`` of every field for each that
    differs, whatever the mirror rows say Autumn holds (their payload hash
    is what misled a plain push). Orphans are left to ``--prune``."""
    missing = {customer_id for _, customer_id in drift.missing}
    runner = BulkSync(client, concurrency=concurrency, batch_size=batch_size)
    registry = sources.registry()
    for label, found in drift.to_repair.items():
        objects = registry.get(label).get_queryset().filter(pk__in=[pk for pk, _ in found]).order_by("pk")
        runner.repair(objects, missing)
    return runner.finish()


def pull(client: AutumnClient, *, batch_size: int = 500, dry_run: bool = False) -> Summary:
    """Refresh the mirror's remote columns from customers.list, and link
    customers that already exist to the local objects (users, teams) they
    belong to."""
    summary = Summary(dry_run=dry_run)
    before = Counter(client.calls)
    env = mapping.current_env()
    unlinked: dict[str, Any] = {}
    for source in sources.registry():
        linked_ids = Customer.objects.filter(
            content_type=ContentType.objects.get_for_model(source.model_class), object_id__isnull=False
        ).values_list("object_id", flat=True)
        for chunk in chunks(source.get_queryset().order_by("pk").iterator(chunk_size=batch_size), batch_size):
            taken = set(linked_ids.filter(object_id__in=[str(obj.pk) for obj in chunk]))
            for obj in chunk:
                if str(obj.pk) in taken:
                    continue
                try:
                    if mapping.should_sync(obj, source):
                        unlinked[mapping.payload_for(obj, source).customer_id] = obj
                except MappingError:
                    continue
    for page in chunks(client.iter_customers(), batch_size):
        page = [customer for customer in page if customer.get("id")]
        rows = {
            row.customer_id: row
            for row in Customer.objects.filter(env=env, customer_id__in=[c["id"] for c in page])
        }
        refreshed, linked, billed = [], [], []
        for customer in page:
            row = rows.get(customer["id"])
            if row is None:
                obj = unlinked.pop(customer["id"], None)
                if obj is None:
                    continue
                row = Customer(**sync.link_values(obj), env=env, state=Customer.State.SYNCED)
                linked.append(row)
            else:
                refreshed.append(row)
                if billing.changed(row.data, customer):
                    billed.append((row, customer))
            for name, value in sync.refreshed_values(customer).items():
                setattr(row, name, value)
        summary.counts["refreshed"] += len(refreshed)
        summary.counts["linked"] += len(linked)
        if not dry_run:
            with transaction.atomic():
                write_rows(refreshed, REFRESHED_FIELDS)
                Customer.objects.bulk_create(linked, batch_size=batch_size)
                billed += [(row, row.data) for row in linked]
                billing.store((row.pk, customer) for row, customer in billed)
    return summary.finish(client, before)


def prune(
    client: AutumnClient, orphans: list[str], *, concurrency: int = 32, dry_run: bool = False
) -> Summary:
    """Delete remote customers that no local object accounts for."""
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
    Customer.objects.filter(customer_id__in=orphans, object_id__isnull=True).delete()
    return summary.finish(client, before)
