"""The example project's main job, end to end against the local emulator:
sample users and teams, a bulk sync with its progress bar, a drift check,
an admin login, and the site served until Ctrl-C, with the emulator's
webhooks delivered to it: once the site is up, the emulator attaches the
plan pro to the admin, and its ``billing.updated`` brings it to the
admin's Billing page.

Every command it prints works as printed, from the directory it was run in:
``make demo`` when make started it, otherwise this interpreter's own path
(``.venv/bin/python manage.py ...``), never a bare ``python`` that may not
have Django (tests/test_quick_start.py runs them)."""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from autumn_django import conf
from autumn_django.emulator import BillingError, Emulator, EmulatorServer, Plan
from autumn_django.models import Customer
from autumn_django.signals import disable_sync
from example_project.models import Membership, Team

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
ADMIN_USERNAME = "admin"
DEFAULT_USERS = 300
#: Sample teams: one per USERS_PER_TEAM sample users unless --teams says,
#: each with its owner and MEMBERS - 1 more sample users.
USERS_PER_TEAM = 10
MEMBERS = 4
DEFAULT_ADDRPORT = "127.0.0.1:8000"
#: The plan the demo attaches to the admin once the site is up (a
#: subscription), and the one whose attach_plan command it prints (bought,
#: not subscribed to, so the command works again and again).
DEMO_PLAN = "pro"
BY_HAND_PLAN = "credits"
WEBHOOK_PATH = "/autumn/webhooks/"
#: How long the demo waits for the site to listen, then for the webhook.
SITE_UP_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 15.0


def shown_path(path: str | Path) -> str:
    """``path`` as a person types it here: relative to the current directory
    when it is inside it, absolute otherwise; quoted for a shell if need be."""
    absolute = Path(path).absolute()
    try:
        shown = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        shown = str(absolute)
    return shlex.quote(shown)


def manage_py(*args: str) -> str:
    """A manage.py command line that works as is in this terminal and in
    another one opened in the same directory."""
    return " ".join([shown_path(sys.executable), shown_path(Path(settings.BASE_DIR) / "manage.py"), *args])


def site_address(addrport: str) -> tuple[str, int]:
    """Where this machine reaches the site runserver serves at ``addrport``
    (``8000``, ``127.0.0.1:8000``, ``0.0.0.0:8000``, ``[::1]:8000``)."""
    host, _, port = addrport.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def site_url(addrport: str) -> str:
    host, port = site_address(addrport)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class Command(BaseCommand):
    help = (
        "Run the example: emulator, sample users and teams, autumn_sync, a check, an admin login, the site."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--users", type=int, default=DEFAULT_USERS, help=f"sample users to have (default {DEFAULT_USERS})"
        )
        parser.add_argument(
            "--teams",
            type=int,
            help=f"sample teams to have (default one per {USERS_PER_TEAM} sample users)",
        )
        parser.add_argument("--no-serve", action="store_true", help="stop after the sync and the check")
        parser.add_argument(
            "--addrport", default=DEFAULT_ADDRPORT, help=f"where to serve (default {DEFAULT_ADDRPORT})"
        )
        parser.add_argument(
            "--no-emulator",
            action="store_true",
            help="do not start the emulator; use AUTUMN['BASE_URL'] as it is",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        autumn = conf.load()
        base_url = autumn.base_url
        server = None
        # Served, the emulator delivers its webhooks to the site, signed with
        # the first secret the site accepts (settings: the emulator's own).
        secret = next(iter(autumn.webhook_secrets), None)
        webhook_url = None
        if not options["no_serve"] and secret is not None:
            webhook_url = site_url(options["addrport"]) + WEBHOOK_PATH
        if not options["no_emulator"] and urlsplit(base_url).hostname in ("127.0.0.1", "localhost"):
            server = self.start_emulator(base_url, webhook_url, secret)
        try:
            teams = options["users"] // USERS_PER_TEAM if options["teams"] is None else options["teams"]
            self.step(f"1. Sample users ({options['users']}) and teams ({teams})")
            self.make_users(options["users"])
            self.make_teams(teams, options["users"])
            self.step("2. manage.py autumn_sync: every user and team to an Autumn customer")
            call_command("autumn_sync", stdout=self.stdout, stderr=self.stderr)
            self.step("3. manage.py autumn_sync --check: is Autumn in line with the users and teams?")
            try:
                call_command("autumn_sync", "--check", stdout=self.stdout, stderr=self.stderr)
                self.stdout.write(self.style.SUCCESS("Everything is in sync."))
            except CommandError as error:
                self.stdout.write(self.style.WARNING(str(error)))
            self.step("4. An admin login")
            password, where = self.admin_login()
            self.stdout.write(f"User {ADMIN_USERNAME}, password {password}")
            self.stdout.write(
                f"The same on every run: it is kept in {where} (delete the file for a new one)."
            )
            if options["no_serve"]:
                self.explain_stopped(options)
            else:
                self.explain_serving(
                    options["addrport"], base_url, emulated=server is not None, webhook_url=webhook_url
                )
                if server is not None and webhook_url is not None:
                    threading.Thread(
                        target=self.show_a_plan_arrive,
                        args=(server.emulator, options["addrport"]),
                        name="demo-plan",
                        daemon=True,
                    ).start()
                call_command("runserver", options["addrport"], use_reloader=False)
        finally:
            if server:
                server.stop()

    def step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))

    def start_emulator(
        self, base_url: str, webhook_url: str | None, webhook_secret: str | None
    ) -> EmulatorServer | None:
        parts = urlsplit(base_url)
        data_file = settings.EMULATOR_DATA_FILE
        emulator = Emulator(
            data_file=data_file,
            plans=[Plan(DEMO_PLAN, name="Pro"), Plan(BY_HAND_PLAN, name="Credit pack", one_off=True)],
            default_plans=["free"],
        )
        if webhook_url is not None and webhook_secret is not None:
            emulator.add_webhook(webhook_url, webhook_secret)
        try:
            server = EmulatorServer(emulator, parts.hostname or "127.0.0.1", parts.port or 80)
        except OSError:
            emulator.close()
            self.stdout.write(f"Something already listens at {base_url}; using it as Autumn.")
            return None
        self.stdout.write(
            f"Started the local Autumn emulator at {server.url} (its customers are kept in "
            f"{shown_path(data_file)})."
        )
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
        self.stdout.write(f"Users: {len(new)} created, {len(existing)} already there.")

    def make_teams(self, count: int, users: int) -> None:
        """Teams as the site has them, made like the users: sample team N is
        owned by sample user 10 N, and the next three sample users are its
        other members."""
        existing = set(Team.objects.filter(name__startswith="Sample team").values_list("name", flat=True))
        wanted = [(number, f"Sample team {number:02d}") for number in range(count)]
        wanted = [(number, name) for number, name in wanted if name not in existing]
        if wanted and not users:
            raise CommandError("Sample teams need sample users: give --users more than 0, or --teams 0.")
        User = get_user_model()
        samples = dict(User.objects.filter(username__startswith="sample").values_list("username", "pk"))
        size = min(MEMBERS, users)

        def members(number: int) -> list[Any]:
            """Sample user 10 N (the owner) and the next ones, wrapping around."""
            first = number * USERS_PER_TEAM
            return [samples[f"sample{(first + offset) % users:04d}"] for offset in range(size)]

        with disable_sync():
            teams = Team.objects.bulk_create(
                Team(name=name, owner_id=members(number)[0]) for number, name in wanted
            )
            Membership.objects.bulk_create(
                Membership(team=team, user_id=user)
                for team, (number, _) in zip(teams, wanted, strict=True)
                for user in members(number)
            )
        each = f" (an owner and {size - 1} more members each)" if teams else ""
        self.stdout.write(f"Teams: {len(teams)} created{each}, {len(existing)} already there.")

    def admin_login(self) -> tuple[str, str]:
        """The admin's password, the same on every run: made once and kept
        beside the demo's data (readable by its owner only), and set again
        on the admin user if it was changed meanwhile. Returns it and where
        it is kept."""
        path = Path(settings.DEMO_ADMIN_PASSWORD_FILE)
        password = path.read_text().strip() if path.exists() else ""
        if not password:
            password = secrets.token_urlsafe(12)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(password + "\n")
        User = get_user_model()
        admin = User.objects.filter(username=ADMIN_USERNAME).first()
        if admin is None:
            User.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
        elif not (admin.check_password(password) and admin.is_active and admin.is_superuser):
            admin.set_password(password)
            admin.is_active = admin.is_staff = admin.is_superuser = True
            admin.save()
        return password, shown_path(path)

    def admin_pages(self, indent: str) -> list[str]:
        """What the two admin pages show, in a site owner's words."""
        return [
            f"{indent}Autumn customers         the customers your Autumn account holds, read live",
            f"{indent}Autumn customer mirrors  each user's and team's link to Autumn: whether its",
            f"{indent}                         latest change got there, when, and the error if not",
        ]

    def explain_serving(
        self, addrport: str, base_url: str, *, emulated: bool, webhook_url: str | None
    ) -> None:
        site = f"http://{addrport}"
        autumn = f"the emulator at {base_url}, until Ctrl-C" if emulated else f"{base_url}"
        plan, admin = DEMO_PLAN, ADMIN_USERNAME
        if emulated and webhook_url:
            plans = [
                f"  Autumn: {autumn}; its webhooks go to",
                f"          {webhook_url}, signed with the secret the site accepts",
                f"  Plans:  once the site is up, the emulator attaches {plan} to {admin}, and its",
                f"          webhook brings it here: the Billing page of {admin} ({site}/billing/)",
                f"          shows {plan} arrive.",
                "          To attach a plan yourself, in another terminal: "
                + manage_py("attach_plan", ADMIN_USERNAME, BY_HAND_PLAN),
            ]
        elif emulated:
            plans = [
                f"  Autumn: {autumn}; no webhooks: AUTUMN_WEBHOOK_SECRET is empty, so plans",
                "          reach the Billing page with its Refresh from Autumn button",
            ]
        else:
            plans = [
                f"  Autumn: {autumn}",
                "  Plans:  attach one at Autumn, in another terminal: "
                + manage_py("attach_plan", ADMIN_USERNAME, "PLAN_ID"),
            ]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS(f"Ready: serving {site}/ until Ctrl-C."),
                    f"  Site:   {site}/  sign up, edit your profile, create a team, then open Billing",
                    f"  Admin:  {site}/admin/  log in as {ADMIN_USERNAME}; under Autumn:",
                    *self.admin_pages("            "),
                    *plans,
                    "  Try:    change a user's email in the admin and watch their mirror follow;",
                    f"          in another terminal here: {manage_py('autumn_sync', '--check')}",
                    "",
                ]
            )
        )

    def explain_stopped(self, options: dict[str, Any]) -> None:
        # The same run, served: this run's options but --no-serve.
        args = [f"--users={options['users']}"] if options["users"] != DEFAULT_USERS else []
        if options["teams"] is not None:
            args.append(f"--teams={options['teams']}")
        if options["addrport"] != DEFAULT_ADDRPORT:
            args.append(f"--addrport={options['addrport']}")
        if options["no_emulator"]:
            args.append("--no-emulator")
        if os.environ.get("MAKELEVEL"):
            serve = "make demo" + (f" DEMO_ARGS={shlex.quote(' '.join(args))}" if args else "")
        else:
            serve = manage_py("demo", *args)
        site = f"http://{options['addrport']}"
        plan, admin = DEMO_PLAN, ADMIN_USERNAME
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS("Done. Nothing is served, and the emulator has stopped."),
                    f"  To look around, run: {serve}",
                    f"  It serves the site at {site}/ with the emulator until Ctrl-C: sign up, create a",
                    "  team, and see both Autumn customers on the Billing page. Plans come by webhook: "
                    "once the site",
                    f"  is up, the emulator attaches {plan} to {admin}, and the Billing page of {admin} "
                    "shows it arrive. In",
                    f"  the admin ({site}/admin/, log in as {admin}), under Autumn:",
                    *self.admin_pages("    "),
                ]
            )
        )

    def show_a_plan_arrive(self, emulator: Emulator, addrport: str) -> None:
        """Once the site listens, attach DEMO_PLAN to the admin at the
        emulator (again, when an earlier run attached it: ended first), and
        say when its webhook has brought it to the mirror. Runs on its own
        thread while runserver serves; a failure is said, never raised."""
        try:
            self.stdout.write(self.plan_arrival(emulator, addrport))
        except Exception as error:  # the site keeps serving whatever happens here
            self.stdout.write(self.style.WARNING(f"The demo could not attach {DEMO_PLAN}: {error}"))
        finally:
            self.stdout.flush()
            connection.close()

    def plan_arrival(self, emulator: Emulator, addrport: str) -> str:
        address = site_address(addrport)
        deadline = time.monotonic() + SITE_UP_TIMEOUT
        while True:
            try:
                socket.create_connection(address, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return self.style.WARNING(f"The site did not answer at {addrport}: no plan was attached.")
                time.sleep(0.05)
        admin = get_user_model().objects.get(username=ADMIN_USERNAME)
        row = Customer.objects.of(admin).first()
        if row is None or not row.is_known_remotely:
            return self.style.WARNING(f"{ADMIN_USERNAME} has no Autumn customer yet: no plan was attached.")
        before = row.synced_at
        held = emulator.customer(row.customer_id) or {}
        if any(
            sub["plan_id"] == DEMO_PLAN and sub["status"] != "expired"
            for sub in held.get("subscriptions", [])
        ):
            emulator.expire(row.customer_id, DEMO_PLAN)  # attached by an earlier run: show it arrive again
        sent = time.monotonic()
        try:
            emulator.attach(row.customer_id, DEMO_PLAN)
        except BillingError as error:
            return self.style.WARNING(f"The emulator refused to attach {DEMO_PLAN}: {error.message}")
        while time.monotonic() - sent < ARRIVAL_TIMEOUT:
            row.refresh_from_db(fields=["data", "synced_at"])
            if row.synced_at != before and row.has_plan(DEMO_PLAN):
                waited = (time.monotonic() - sent) * 1000
                return "\n".join(
                    [
                        self.style.SUCCESS(
                            f"Attached {DEMO_PLAN} to {ADMIN_USERNAME} at the emulator: its webhook reached "
                            f"the site and the mirror shows {DEMO_PLAN} {waited:.0f} ms later."
                        ),
                        f"  See it: log in as {ADMIN_USERNAME} and open {site_url(addrport)}/billing/",
                    ]
                )
            time.sleep(0.05)
        return self.style.WARNING(
            f"Attached {DEMO_PLAN} to {ADMIN_USERNAME} at the emulator, but after {ARRIVAL_TIMEOUT:g} s the "
            "mirror does not show it: see Autumn webhook events in the admin."
        )
