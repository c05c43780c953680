"""``manage.py attach_plan WHO PLAN``: attach a plan to a customer at Autumn
(the emulator ``manage.py demo`` serves, or your sandbox) with Autumn's
``billing.attach``, then wait for Autumn's webhook to bring it to the
mirror, as the Billing page shows it.

WHO is a username, a team's name, or a customer id (``team:3``). The
command does not write the mirror itself: what it waits for is the
``billing.updated`` delivery to the site's /autumn/webhooks/, so the site
must be served (``manage.py demo`` does) and accept the secret Autumn signs
with (``AUTUMN_WEBHOOK_SECRET``; the emulator's by default)."""

from __future__ import annotations

import time
from typing import Any

import requests
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autumn_django import conf, contract
from autumn_django.models import Customer
from example_project.models import Team

ATTACH = "billing.attach"
DEFAULT_WAIT = 10.0


class Command(BaseCommand):
    help = (
        "Attach a plan to a user's or a team's Autumn customer, and wait for its webhook to reach the mirror."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("who", help="a username, a team's name, or an Autumn customer id (team:3)")
        parser.add_argument("plan", help="the plan's id at Autumn (the demo's emulator has pro and credits)")
        parser.add_argument(
            "--wait",
            type=float,
            default=DEFAULT_WAIT,
            metavar="SECONDS",
            help=f"how long to wait for the webhook to reach the mirror (default {DEFAULT_WAIT:g}; 0: none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        who, plan_id = options["who"], options["plan"]
        row, shown = self.customer_of(who)
        customer_id = row.customer_id if row is not None else who
        before = row.synced_at if row is not None else None
        answer = self.attach(customer_id, plan_id)
        self.stdout.write(f"Attached {plan_id} to {shown} (Autumn customer {customer_id}).")
        if answer.get("payment_url"):
            self.stdout.write(f"Autumn waits for a payment before the plan starts: {answer['payment_url']}")
            return
        if row is None:
            self.stdout.write(
                "No user or team of this site is that customer: its mirror has nothing to show."
            )
            return
        if options["wait"] <= 0:
            return
        started = time.monotonic()
        deadline = started + options["wait"]
        while True:
            row.refresh_from_db(fields=["data", "synced_at"])
            if row.synced_at != before and row.has_plan(plan_id):
                waited = (time.monotonic() - started) * 1000
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Autumn's webhook brought it to the mirror in {waited:.0f} ms: "
                        f"the Billing page of {shown} shows {plan_id}."
                    )
                )
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self.stdout.write(
            self.style.WARNING(
                f"The mirror does not show {plan_id} after {options['wait']:g} s: no webhook from Autumn "
                "reached the site. Is it served (manage.py demo), and does AUTUMN_WEBHOOK_SECRET hold the "
                "secret Autumn signs with? Refresh from Autumn, on the Billing page, reads it now."
            )
        )

    def customer_of(self, who: str) -> tuple[Customer | None, str]:
        """The mirror row ``who`` names (a username, a team's name, or a
        customer id), and how to name it; (None, who) for a customer id no
        row holds."""
        User = get_user_model()
        obj: Any = User._default_manager.filter(**{User.USERNAME_FIELD: who}).first()
        shown = who
        if obj is None:
            obj = Team.objects.filter(name=who).order_by("pk").first()
            shown = f"team {who}"
        if obj is None:
            return Customer.objects.filter(customer_id=who).first(), who
        row = Customer.objects.of(obj).first()
        if row is None or not row.is_known_remotely:
            raise CommandError(f"{shown} is not an Autumn customer yet: run manage.py autumn_sync first.")
        return row, shown

    def attach(self, customer_id: str, plan_id: str) -> dict[str, Any]:
        """Autumn's answer to ``billing.attach``; CommandError with Autumn's
        message when it refuses, or when nothing answers."""
        settings = conf.load()
        with requests.Session() as session:
            session.trust_env = False  # as the client: no proxy for a local emulator
            try:
                response = session.post(
                    settings.base_url + contract.path(ATTACH),
                    json={"customer_id": customer_id, "plan_id": plan_id},
                    headers={
                        "Authorization": f"Bearer {settings.secret_key}",
                        "x-api-version": settings.api_version,
                    },
                    timeout=(3.05, 30),
                    allow_redirects=False,
                )
            except requests.RequestException:
                raise CommandError(
                    f"No answer from Autumn at {settings.base_url}: is the demo (manage.py demo) running?"
                ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            code = body.get("code") if isinstance(body, dict) else None
            raise CommandError(
                f"Autumn refused to attach {plan_id} to {customer_id}: "
                f"{message or f'HTTP {response.status_code}'}" + (f" ({code})" if code else "")
            )
        return body
