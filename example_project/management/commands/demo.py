"""The example project's main job, end to end against the local emulator:
sample users and teams, a bulk sync with its progress bar, a drift check,
an admin login, and the site served until Ctrl-C.

Every command it prints works as printed, from the directory it was run in:
``make demo`` when make started it, otherwise this interpreter's own path
(``.venv/bin/python manage.py ...``), never a bare ``python`` that may not
have Django (tests/test_quick_start.py runs them)."""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autumn_django import conf
from autumn_django.emulator import Emulator, EmulatorServer, Plan
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
        base_url = conf.load().base_url
        server = None
        if not options["no_emulator"] and urlsplit(base_url).hostname in ("127.0.0.1", "localhost"):
            server = self.start_emulator(base_url)
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
                self.explain_serving(options["addrport"], base_url, emulated=server is not None)
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

    def explain_serving(self, addrport: str, base_url: str, *, emulated: bool) -> None:
        site = f"http://{addrport}"
        autumn = f"the emulator at {base_url}, until Ctrl-C" if emulated else f"{base_url}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS(f"Ready: serving {site}/ until Ctrl-C."),
                    f"  Site:   {site}/  sign up, edit your profile, create a team, then open Billing",
                    f"  Admin:  {site}/admin/  log in as {ADMIN_USERNAME}; under Autumn:",
                    *self.admin_pages("            "),
                    f"  Autumn: {autumn}",
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
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS("Done. Nothing is served, and the emulator has stopped."),
                    f"  To look around, run: {serve}",
                    f"  It serves the site at {site}/ with the emulator until Ctrl-C: sign up, create a",
                    "  team, and see both Autumn customers on the Billing page. In the admin",
                    f"  ({site}/admin/, log in as {ADMIN_USERNAME}), under Autumn:",
                    *self.admin_pages("    "),
                ]
            )
        )
