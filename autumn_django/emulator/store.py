"""The customers the emulator holds, and the data file that keeps them.

Records live per environment in insertion order, indexed by customer id and,
for customers made without an id, by lower-cased email; listings read a
sorted copy cached until the next insertion or deletion. The routes read and
write records through :class:`Store`; what a client sees of one is
:meth:`Store.public`, Autumn's customer object. Nothing here knows HTTP.

Contract notes: choices made where Autumn's customers API contract is silent.

* Customers with equal ``created_at`` are listed newest insertion first.
* Expand-only keys carry empty values (no invoices, rewards and so on exist
  here); ``subscriptions.plan`` and ``purchases.plan`` carry the plan.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire import JSONDict

ENVIRONMENTS = ("sandbox", "live")
_ALNUM = string.ascii_letters + string.digits
_SAVE_PIECE = 200  # records serialized per hold of the lock


@dataclass
class Plan:
    """A plan that exists at Autumn; ``default`` ones go to every new customer.
    A ``one_off`` plan is bought (a purchase), not subscribed to."""

    id: str
    name: str | None = None
    default: bool = False
    add_on: bool = False
    version: int = 1
    one_off: bool = False


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def detached(value: Any) -> Any:
    """A deep copy that shares nothing with the store (JSON values only)."""
    return json.loads(json.dumps(value))


def processors(record: JSONDict) -> set[str]:
    """The payment processors a customer is linked to (only Stripe exists)."""
    return {"stripe"} if record["stripe_id"] else set()


def position(record: JSONDict) -> tuple[int, int]:
    """Where a record sorts: by ``created_at``, then by insertion."""
    return record["created_at"], record["_seq"]


def encode_cursor(record: JSONDict) -> str:
    """The ``next_cursor`` that resumes a listing after ``record``."""
    created_at, seq = position(record)
    raw = json.dumps({"c": created_at, "s": seq}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int] | None:
    """The position a cursor resumes after, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return int(data["c"]), int(data["s"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


class Store:
    """The customers of both environments, with their plans and data file.

    Not locked by itself: callers hold ``lock`` around every call, except
    :meth:`save` and :meth:`close`, which take it themselves.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        lock: threading.RLock,
        data_file: str | Path | None = None,
    ) -> None:
        self.clock = clock
        self.lock = lock
        self.plans: dict[str, Plan] = {}
        # env -> internal id -> record, in insertion order; env -> id -> internal id
        self._records: dict[str, dict[str, JSONDict]] = {env: {} for env in ENVIRONMENTS}
        self._by_id: dict[str, dict[str, str]] = {env: {} for env in ENVIRONMENTS}
        # env -> lower-cased email -> internal id, for the customers without an id
        self._idless: dict[str, dict[str, str]] = {env: {} for env in ENVIRONMENTS}
        self._seq = 0
        self._generation = 0  # bumped when customers come or go; keys the sorted cache
        self._sorted_cache: dict[str, tuple[int, list[JSONDict]]] = {}
        # Events the last writes caused, (env, type, data), for the emulator to send.
        self.outbox: list[tuple[str, str, JSONDict]] = []
        self._data_file = Path(data_file) if data_file else None
        self._dirty = threading.Event()
        self._closed = threading.Event()
        if self._data_file:
            self._load()
            threading.Thread(target=self._flush_loop, name="autumn-emulator-save", daemon=True).start()

    # --- reading ----------------------------------------------------------------

    def find(self, env: str, customer_id: str) -> JSONDict | None:
        internal = self._by_id[env].get(customer_id)
        if internal is None and customer_id.startswith("cus_"):
            internal = customer_id  # Autumn also accepts its internal id
        return self._records[env].get(internal) if internal else None

    def find_idless(self, env: str, email: str) -> JSONDict | None:
        internal = self._idless[env].get(email.lower())
        return self._records[env].get(internal) if internal else None

    def counts(self) -> dict[str, int]:
        """Customers per environment."""
        return {env: len(records) for env, records in self._records.items()}

    def ordered(self, env: str, order: str) -> list[JSONDict]:
        """The customers newest first (or oldest), cached until the next write
        so paging through a large store does not sort it on every page."""
        cached = self._sorted_cache.get(env)
        if cached is None or cached[0] != self._generation:
            newest_first = sorted(self._records[env].values(), key=position, reverse=True)
            cached = (self._generation, newest_first)
            self._sorted_cache[env] = cached
        return cached[1] if order == "desc" else cached[1][::-1]

    def public(self, record: JSONDict, expand: Iterable[str] = ()) -> JSONDict:
        """Autumn's customer object, with every key its contract requires.

        It shares its lists and dicts with the store (it is serialized at
        once on the request path); what leaves for tests is ``detached``.
        """
        customer = {
            "id": record["id"],
            "name": record["name"],
            "email": record["email"],
            "created_at": record["created_at"],
            "fingerprint": record["fingerprint"],
            "stripe_id": record["stripe_id"],
            "env": record["env"],
            "metadata": record["metadata"],
            "send_email_receipts": record["send_email_receipts"],
            "billing_controls": {},
            "subscriptions": record["subscriptions"],
            "purchases": record["purchases"],
            "licenses": [],
            "balances": {},
            "flags": {},
            "config": {},
        }
        if processors(record):
            customer["processors"] = {"stripe": {"id": record["stripe_id"]}}
        for item in expand:
            if item in ("invoices", "trials_used", "entities", "referrals"):
                customer[item] = []
            elif item in ("rewards", "payment_method"):
                customer[item] = None
            elif item in ("subscriptions.plan", "purchases.plan"):
                key = item.split(".")[0]
                customer[key] = [
                    {**entry, "plan": self.plan_object(entry["plan_id"], record["env"])}
                    for entry in customer[key]
                ]
        return customer

    def plan_object(self, plan_id: str, env: str) -> JSONDict:
        plan = self.plans.get(plan_id) or Plan(plan_id)
        return {
            "id": plan.id,
            "name": plan.name or plan.id,
            "group": None,
            "version": plan.version,
            "add_on": plan.add_on,
            "auto_enable": plan.default,
            "env": env,
            "archived": False,
            "items": [],
        }

    # --- writing ----------------------------------------------------------------

    def new_record(self, env: str, customer_id: str | None, fields: JSONDict) -> JSONDict:
        """Add a customer (with the default plans) and return its record."""
        self._seq += 1
        record: JSONDict = {
            "internal_id": random_id("cus_"),
            "_seq": self._seq,
            "id": customer_id,
            "name": fields.get("name") or None,
            "email": fields.get("email") or None,
            "fingerprint": fields.get("fingerprint") or None,
            "stripe_id": fields.get("stripe_id") or None,
            "created_at": int(fields.get("created_at") or self.clock() * 1000),
            "env": env,
            "metadata": dict(fields.get("metadata") or {}),
            "send_email_receipts": bool(fields.get("send_email_receipts", False)),
            "subscriptions": [],
            "purchases": [],
        }
        self._index(env, record)
        self.changed(reordered=True)
        for plan in self.plans.values():
            if plan.default:
                self.attach(record, plan, auto_enable=True)
        return record

    def attach(self, record: JSONDict, plan: Plan, *, auto_enable: bool) -> JSONDict | None:
        """Subscribe a customer to ``plan`` (once: an expired subscription
        does not count); the new subscription, or None when one was there."""
        if any(sub["plan_id"] == plan.id and sub["status"] != "expired" for sub in record["subscriptions"]):
            return None
        now = int(self.clock() * 1000)
        subscription: JSONDict = {
            "id": random_id("cus_prod_", 16),
            "plan_id": plan.id,
            "auto_enable": auto_enable,
            "add_on": plan.add_on,
            "status": "active",
            "past_due": False,
            "canceled_at": None,
            "expires_at": None,
            "trial_ends_at": None,
            "started_at": now,
            "current_period_start": None,
            "current_period_end": None,
            "quantity": 1,
            "scope": "customer",
        }
        record["subscriptions"].append(subscription)
        return subscription

    def set_id(self, env: str, record: JSONDict, customer_id: str) -> None:
        self.unindex_idless(env, record)
        if record["id"] is not None:
            self._by_id[env].pop(record["id"], None)
        record["id"] = customer_id
        self._by_id[env][customer_id] = record["internal_id"]

    def remove(self, env: str, record: JSONDict) -> None:
        del self._records[env][record["internal_id"]]
        if record["id"] is not None:
            self._by_id[env].pop(record["id"], None)
        self.unindex_idless(env, record)
        self.changed(reordered=True)

    def index_idless(self, env: str, record: JSONDict) -> None:
        """Find an id-less customer by its email (the first one with it wins)."""
        if record["id"] is None and record["email"]:
            self._idless[env].setdefault(record["email"].lower(), record["internal_id"])

    def unindex_idless(self, env: str, record: JSONDict) -> None:
        if record["email"] and self._idless[env].get(record["email"].lower()) == record["internal_id"]:
            del self._idless[env][record["email"].lower()]

    def _index(self, env: str, record: JSONDict) -> None:
        self._records[env][record["internal_id"]] = record
        if record["id"] is not None:
            self._by_id[env][record["id"]] = record["internal_id"]
        self.index_idless(env, record)

    def changed(self, *, reordered: bool = False) -> None:
        """Note a write: for the data file, and (when customers were added or
        removed) for the sorted listing cache."""
        if reordered:
            self._generation += 1
        self._dirty.set()

    def emit(self, env: str, event_type: str, data: JSONDict) -> None:
        """Note an event for the emulator to send once the write is done."""
        self.outbox.append((env, event_type, detached(data)))

    def take_events(self) -> list[tuple[str, str, JSONDict]]:
        """The events noted since the last call, oldest first."""
        events, self.outbox = self.outbox, []
        return events

    def clear(self) -> None:
        """Forget every customer and unsent event (the plans stay)."""
        self.outbox.clear()
        for env in self._records:
            self._records[env].clear()
            self._by_id[env].clear()
            self._idless[env].clear()
        self.changed(reordered=True)

    # --- persistence ------------------------------------------------------------

    def save(self) -> None:
        """Write the customers to ``data_file`` now (atomically).

        The store is serialized a few hundred records at a time, taking the
        lock (and, in json's C encoder, the GIL) for each piece only, so a
        save of a large store never stalls the requests being served; a stall
        would release a burst of queued requests into one rate-limit window.
        """
        if not self._data_file:
            return
        self._dirty.clear()
        self._data_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._data_file.with_suffix(self._data_file.suffix + ".tmp")
        with temporary.open("w") as out:
            with self.lock:
                out.write(f'{{"format":1,"seq":{self._seq},"records":{{')
                environments = {env: list(records.values()) for env, records in self._records.items()}
            for number, (env, records) in enumerate(environments.items()):
                out.write(("," if number else "") + json.dumps(env) + ":[")
                for start in range(0, len(records), _SAVE_PIECE):
                    with self.lock:
                        piece = json.dumps(records[start : start + _SAVE_PIECE], separators=(",", ":"))
                    out.write(("," if start else "") + piece[1:-1])
                out.write("]")
            out.write("}}")
        temporary.replace(self._data_file)

    def close(self) -> None:
        """Stop the background saver, saving what is unsaved."""
        self._closed.set()
        if self._dirty.is_set():
            self.save()

    def _load(self) -> None:
        assert self._data_file is not None
        if not self._data_file.exists():
            return
        state = json.loads(self._data_file.read_text())
        self._seq = state.get("seq", 0)
        for env, records in state.get("records", {}).items():
            for record in records:
                self._index(env, record)

    def _flush_loop(self) -> None:
        # Writes are batched: saving after every request would make a bulk
        # sync of a million customers rewrite the file a million times. The
        # pause grows with the time a save takes, keeping saving under ~5% of
        # the time however large the store.
        pause = 0.25
        while not self._closed.wait(pause):
            if self._dirty.is_set():
                started = time.monotonic()
                self.save()
                pause = max(0.25, 20 * (time.monotonic() - started))
