"""The example project's main job: Autumn customers made and listed through
autumn-django, against the local emulator unless AUTUMN_BASE_URL says else."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from autumn_django import conf
from autumn_django.client import get_client
from autumn_django.emulator import Emulator, EmulatorServer

SAMPLE_CUSTOMERS = [
    ("demo-1", "Ada Lovelace", "ada@example.com"),
    ("demo-2", "Grace Hopper", "grace@example.com"),
    ("demo-3", "Alan Turing", "alan@example.com"),
]


class Command(BaseCommand):
    help = "Start the local Autumn emulator, create sample customers through the client and list them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-emulator",
            action="store_true",
            help="do not start the emulator; use AUTUMN['BASE_URL'] as it is",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base_url = conf.load().base_url
        server = None
        if not options["no_emulator"] and urlsplit(base_url).hostname in ("127.0.0.1", "localhost"):
            server = self._start_emulator(base_url)
        try:
            self._run(base_url)
        finally:
            if server:
                server.stop()

    def _start_emulator(self, base_url: str) -> EmulatorServer | None:
        parts = urlsplit(base_url)
        data_file = settings.EMULATOR_DATA_FILE
        try:
            server = EmulatorServer(
                Emulator(data_file=data_file), parts.hostname or "127.0.0.1", parts.port or 80
            )
        except OSError:
            self.stdout.write(f"Something already listens at {base_url}; using it as the emulator.")
            return None
        self.stdout.write(f"Started the Autumn emulator at {server.url} (data in {data_file}).")
        return server.start()

    def _run(self, base_url: str) -> None:
        client = get_client()
        self.stdout.write(f"Using {client!r}")
        for customer_id, name, email in SAMPLE_CUSTOMERS:
            customer = client.get_or_create_customer(
                customer_id, name=name, email=email, metadata={"source": "autumn-django demo"}
            )
            self.stdout.write(f"  get_or_create {customer['id']}: {customer['name']} <{customer['email']}>")
        self.stdout.write("Customers in Autumn (newest first):")
        count = 0
        for customer in client.iter_customers():
            count += 1
            self.stdout.write(
                f"  {customer['id'] or '(no id)':<12} {customer['name'] or '':<16} {customer['email'] or ''}"
            )
        self.stdout.write(self.style.SUCCESS(f"{count} customers listed from {base_url}."))
