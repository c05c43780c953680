"""Webhooks from Autumn: verify a delivery, store it, and process it later.

Autumn delivers through Svix. A delivery is verified on its raw body with
the ``standardwebhooks`` library (Svix's ``svix-*`` headers are Standard
Webhooks' ``webhook-*`` headers renamed), against every secret in
``AUTUMN["WEBHOOK_SECRETS"]`` (several during a rotation). A verified
delivery is stored as a :class:`~autumn_django.models.WebhookEvent` and
acknowledged at once; a repeated ``svix-id`` (Svix retries a message until
it gets a 2xx, for days) finds its row and does nothing more.

Processing, in a task, reads the customer the event names from Autumn
(``customers.get``) rather than trusting the event's own fields, so the
order events arrive in does not matter, and an event received before the
row's last refresh costs no request: a burst of events for one customer
costs one fetch. A failure leaves the event ``failed`` with its error and
retries it later; nothing is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from . import conf, mapping, signals, sync
from .client import AutumnClient, get_client
from .exceptions import AutumnError, message_text
from .models import Customer, WebhookEvent

logger = logging.getLogger("autumn_django.webhooks")

#: The largest delivery accepted; Autumn's events are a few KB.
MAX_BODY = 256 * 1024

#: Event types, the signal each sends, and where its customer id is.
SIGNALS: dict[str, Signal] = {
    "billing.updated": signals.billing_updated,
    "customer.products.updated": signals.customer_products_updated,
    "balances.limit_reached": signals.balance_limit_reached,
    "balances.usage_alert_triggered": signals.usage_alert_triggered,
    "billing.auto_topup_succeeded": signals.auto_topup,
    "billing.auto_topup_failed": signals.auto_topup,
}


class Refused(Exception):
    """A delivery that is not Autumn's (or not intact): answered 400 with
    this short reason, and nothing stored."""


@dataclass(frozen=True)
class Received:
    """What :func:`receive` did with a delivery."""

    event: WebhookEvent
    created: bool

    @property
    def to_process(self) -> bool:
        return self.created and self.event.state == WebhookEvent.State.PENDING


def verify(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The delivery's JSON if one of the configured secrets signed it;
    :class:`Refused` otherwise (no secret, bad or missing signature, a
    timestamp more than 5 minutes off, a malformed header or body)."""
    secrets = conf.load().webhook_secrets
    if not secrets:
        raise Refused('no AUTUMN["WEBHOOK_SECRETS"] configured')
    lower = {name.lower(): value for name, value in headers.items()}
    renamed = {f"webhook-{part}": lower.get(f"svix-{part}", "") for part in ("id", "timestamp", "signature")}
    reason = "bad signature"
    for secret in secrets:
        try:
            payload = Webhook(secret).verify(body, renamed)
        except WebhookVerificationError as error:
            reason = str(error) or reason
        except (ValueError, TypeError, RecursionError):  # a malformed header, or a body that is not JSON
            reason = "malformed signature header or body"
        else:
            if isinstance(payload, dict) and isinstance(payload.get("type"), str):
                return payload
            raise Refused("the body is not an event")
    raise Refused(reason)


def receive(body: bytes, headers: dict[str, str]) -> Received:
    """Verify and store one delivery (the caller enqueues its processing
    when it is new and of a known type). Raises :class:`Refused` for a
    delivery that is not Autumn's."""
    payload = verify(body, headers)
    svix_id = next(value for name, value in headers.items() if name.lower() == "svix-id")[:255]
    known = payload["type"] in SIGNALS
    try:
        with transaction.atomic():
            event, created = WebhookEvent.objects.get_or_create(
                svix_id=svix_id,
                defaults={
                    "type": payload["type"][:100],
                    "customer_id": customer_id_of(payload)[:255],
                    "payload": payload,
                    "state": WebhookEvent.State.PENDING if known else WebhookEvent.State.IGNORED,
                },
            )
    except IntegrityError:  # the same message, stored by a concurrent delivery
        return Received(WebhookEvent.objects.get(svix_id=svix_id), False)
    return Received(event, created)


def customer_id_of(payload: dict[str, Any]) -> str:
    """The customer an event names: ``data.customer_id``, or for the legacy
    ``customer.products.updated`` the id of ``data.customer``."""
    data = payload.get("data")
    if not isinstance(data, dict):
        return ""
    value = data.get("customer_id")
    if value is None and isinstance(data.get("customer"), dict):
        value = data["customer"].get("id")
    return value if isinstance(value, str) else ""


def process(event_pk: int, client: AutumnClient | None = None) -> WebhookEvent | None:
    """Process one stored event: refresh its customer's mirror row from
    Autumn (unless a refresh since the event was received already did),
    then send the signals. A failure, in the request or in a site's signal
    receiver, marks the event failed with its error and a time to retry."""
    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is None or event.state in (WebhookEvent.State.PROCESSED, WebhookEvent.State.IGNORED):
        return event
    row = None
    try:
        if event.customer_id:
            row = Customer.objects.filter(env=mapping.current_env(), customer_id=event.customer_id).first()
            if row is not None and not (row.synced_at and row.synced_at >= event.received_at):
                sync.refresh(row, client or get_client())
                row.refresh_from_db()
        signals.webhook_received.send(sender=WebhookEvent, event=event, customer=row)
        extra = (
            {"succeeded": event.type.endswith("succeeded")} if event.type.startswith("billing.auto") else {}
        )
        SIGNALS[event.type].send(sender=WebhookEvent, event=event, customer=row, **extra)
    except Exception as error:
        attempts = event.attempts + 1
        delay = sync.retry_delay(attempts, error)
        WebhookEvent.objects.filter(pk=event.pk).update(
            state=WebhookEvent.State.FAILED,
            attempts=attempts,
            last_error=message_text(f"{type(error).__name__}: {error}"),
            next_attempt_at=timezone.now() + delay,
        )
        event.refresh_from_db()
        if not isinstance(error, AutumnError):
            logger.exception("Processing Autumn webhook %s failed; it will be retried.", event.svix_id)
        else:
            logger.warning("Processing Autumn webhook %s failed: %s", event.svix_id, error)
        return event
    WebhookEvent.objects.filter(pk=event.pk).update(
        state=WebhookEvent.State.PROCESSED,
        attempts=event.attempts + 1,
        last_error="" if row is not None or not event.customer_id else _NO_ROW,
        next_attempt_at=None,
        processed_at=timezone.now(),
    )
    event.refresh_from_db()
    return event


_NO_ROW = (
    "No mirror row holds this customer (made in Autumn's dashboard?): run autumn_sync --pull to link it."
)
