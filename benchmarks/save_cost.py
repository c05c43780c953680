"""What one user save costs the site: SQL queries and Autumn requests.

Counts, for a user created, changed and saved unchanged (Django's last_login
update on login), the queries run in the save (the user's own included) and
the requests sent to Autumn (the in-process emulator answers them), with the
default ImmediateBackend running the sync at commit. Prints a table.

    python benchmarks/save_cost.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from autumn_django.testing import emulate  # noqa: E402


def measure(emulator, action):
    before = len(emulator.requests())
    with CaptureQueriesContext(connection) as queries:
        action()
    ours = sum("autumn_django" in q["sql"] for q in queries.captured_queries)
    routes = [entry.route for entry in emulator.requests()[before:]]
    return len(queries.captured_queries), ours, routes


def main() -> None:
    call_command("migrate", verbosity=0)
    User = get_user_model()
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
    print(f"{'save':<24} {'queries':>8} {'of them ours':>13}  Autumn requests")
    for label, total, ours, routes in rows:
        print(f"{label:<24} {total:>8} {ours:>13}  {len(routes)} {', '.join(routes) or '-'}")


if __name__ == "__main__":
    main()
