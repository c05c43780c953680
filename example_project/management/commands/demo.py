"""The example project's main job, end to end against the local emulator:
sample users, a bulk sync with its progress bar, a drift check, an admin
login, and the site served until Ctrl-C."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autumn_django import conf
from autumn_django.emulator import Emulator, EmulatorServer, Plan
from autumn_django.signals import disable_sync

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
]


class Command(BaseCommand):
    help = "Run the example: emulator, sample users, autumn_sync, a check, an admin login, the site."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=300, help="sample users to have (default 300)")
        parser.add_argument("--no-serve", action="store_true", help="stop after the sync and the check")
        parser.add_argument(
            "--addrport", default="127.0.0.1:8000", help="where to serve (default 127.0.0.1:8000)"
        )
        parser.add_argument(
            "--no-emulator",
            action="store_true",
            help="do not start the emulator; use AUTUMN['BASE_URL'] as it is",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base_url = conf.load().base_url
        server = None
        if not options["no_emulator"] and urlsplit(base_url).hostname in ("127.0.0.1", "localhost"):
            server = self.start_emulator(base_url)
        try:
            self.step(f"1. Sample users ({options['users']})")
            self.make_users(options["users"])
            self.step("2. manage.py autumn_sync: every user to an Autumn customer")
            call_command("autumn_sync", stdout=self.stdout, stderr=self.stderr)
            self.step("3. manage.py autumn_sync --check: is Autumn in line with the users?")
            try:
                call_command("autumn_sync", "--check", stdout=self.stdout, stderr=self.stderr)
                self.stdout.write(self.style.SUCCESS("Everything is in sync."))
            except CommandError as error:
                self.stdout.write(self.style.WARNING(str(error)))
            self.step("4. An admin login")
            password = self.admin_login()
            self.explain(options["addrport"], password, base_url)
            if not options["no_serve"]:
                call_command("runserver", options["addrport"], use_reloader=False)
        finally:
            if server:
                server.stop()

    def step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))

    def start_emulator(self, base_url: str) -> EmulatorServer | None:
        parts = urlsplit(base_url)
        data_file = settings.EMULATOR_DATA_FILE
        emulator = Emulator(data_file=data_file, plans=[Plan("pro", name="Pro")], default_plans=["free"])
        try:
            server = EmulatorServer(emulator, parts.hostname or "127.0.0.1", parts.port or 80)
        except OSError:
            emulator.close()
            self.stdout.write(f"Something already listens at {base_url}; using it as Autumn.")
            return None
        self.stdout.write(f"Started the local Autumn emulator at {server.url} (data kept in {data_file}).")
        return server.start()

    def make_users(self, count: int) -> None:
        """Users as a site has them before installing autumn-django: made
        with signals off, so autumn_sync is what mirrors them."""
        User = get_user_model()
        existing = set(User.objects.filter(username__startswith="sample").values_list("username", flat=True))
        new = []
        for number in range(count):
            username = f"sample{number:04d}"
            if username in existing:
                continue
            first, last = FIRST[number % len(FIRST)], LAST[(number // len(FIRST)) % len(LAST)]
            new.append(
                User(username=username, first_name=first, last_name=last, email=f"{username}@example.com")
            )
        with disable_sync():
            User.objects.bulk_create(new)
        self.stdout.write(f"{len(new)} created, {len(existing)} already there.")

    def admin_login(self) -> str:
        User = get_user_model()
        password = secrets.token_urlsafe(9)
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            User.objects.create_superuser("admin", "admin@example.com", password)
        else:
            admin.set_password(password)
            admin.save()
        return password

    def explain(self, addrport: str, password: str, base_url: str) -> None:
        site = f"http://{addrport}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS("Ready."),
                    f"  Site:   {site}/  (sign up, edit your profile, then open Billing)",
                    f"  Admin:  {site}/admin/  user admin, password {password}",
                    "          Autumn customers: what Autumn holds; Autumn customer mirrors: the rows.",
                    f"  Autumn: the emulator at {base_url}, while this command runs.",
                    "  Try:    change a user's email in the admin and watch the mirror follow;",
                    "          python manage.py autumn_sync --check in another terminal.",
                ]
            )
        )
