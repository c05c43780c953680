"""What one user save costs the site: SQL queries, Autumn requests, time.

Counts, for a user created, changed and saved unchanged (Django's last_login
update on login), the queries run in the save (the user's own included) and
the requests sent to Autumn (the in-process emulator answers them), with the
default ImmediateBackend running the sync at commit. Then times the
unchanged save, the one every login makes, against the same save with sync
disabled, measured side by side in the same run. Prints both tables.

    python benchmarks/save_cost.py [--saves 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from autumn_django.signals import disable_sync  # noqa: E402
from autumn_django.testing import emulate  # noqa: E402


def measure(emulator, action):
    before = len(emulator.requests())
    with CaptureQueriesContext(connection) as queries:
        action()
    ours = sum("autumn_django" in q["sql"] for q in queries.captured_queries)
    routes = [entry.route for entry in emulator.requests()[before:]]
    return len(queries.captured_queries), ours, routes


def time_logins(user, saves: int) -> float:
    """Seconds per unchanged save (a login), best of three rounds."""

    def one_round() -> float:
        started = time.perf_counter()
        for _ in range(saves):
            user.last_login = timezone.now()
            user.save(update_fields=["last_login"])
        return (time.perf_counter() - started) / saves

    return min(one_round() for _ in range(3))


def measure_teams(emulator, owner):
    """The same with teams billed beside users (the suite's TeamSource: the
    owner's email and the member count feed the team's customer)."""
    from tests.teams.billing import EVERY_SOURCE
    from tests.teams.models import Membership, Team

    rows = []
    with override_settings(AUTUMN={**settings.AUTUMN, "CUSTOMER_SOURCES": EVERY_SOURCE}):
        ContentType.objects.get_for_model(Team)
        holder = {}

        def create():
            with transaction.atomic():  # a view's transaction (ATOMIC_REQUESTS)
                holder["team"] = team = Team.objects.create(name="Acme", owner=owner)
                Membership.objects.create(team=team, user=owner)

        rows.append(("team created (with its owner)", *measure(emulator, create)))
        team = holder["team"]

        def rename():
            team.name = "Acme Ltd"
            team.save()

        rows.append(("team renamed", *measure(emulator, rename)))
        rows.append(("team saved unchanged", *measure(emulator, team.save)))

        def owner_email():
            owner.email = "jane@acme.example.com"
            owner.save()

        rows.append(("owner's email changed (1 team)", *measure(emulator, owner_email)))

        def owner_login():
            owner.last_login = timezone.now()
            owner.save(update_fields=["last_login"])

        rows.append(("owner logs in (teams billed)", *measure(emulator, owner_login)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=2000, help="saves per timed round (default 2000)")
    saves = parser.parse_args().saves
    call_command("migrate", verbosity=0)
    User = get_user_model()
    # A running site has read its content types once: measure the steady state.
    ContentType.objects.get_for_model(User)
    with emulate() as emulator:
        rows = []
        holder = {}

        def create():
            holder["user"] = User.objects.create_user("jane", "jane@example.com", "x")

        rows.append(("created", *measure(emulator, create)))
        user = holder["user"]

        def change():
            user.email = "jane.doe@example.com"
            user.save()

        rows.append(("email changed", *measure(emulator, change)))

        def login():
            user.last_login = timezone.now()
            user.save(update_fields=["last_login"])

        rows.append(("unchanged (last_login)", *measure(emulator, login)))
        with disable_sync():
            bare = time_logins(user, saves)
        synced = time_logins(user, saves)
        team_rows = measure_teams(emulator, user)
    print(f"{'save':<34} {'queries':>8} {'of them ours':>13}  Autumn requests")
    for label, total, ours, routes in rows + team_rows:
        print(f"{label:<34} {total:>8} {ours:>13}  {len(routes)} {', '.join(routes) or '-'}")

    print()
    print(
        f"unchanged save, best of 3 x {saves}: {bare * 1e6:.0f} us with sync disabled, "
        f"{synced * 1e6:.0f} us with autumn-django ({synced / bare:.2f}x, "
        f"+{(synced - bare) * 1e6:.0f} us a save)"
    )


if __name__ == "__main__":
    main()
