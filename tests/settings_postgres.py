"""The main suite's settings on PostgreSQL instead of SQLite: the engine's
tests run here too (from test_services.py), because PostgreSQL refuses
what SQLite stores (a NUL character, a value longer than its column)."""

import os

from .settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("AUTUMN_TEST_PG_HOST", "127.0.0.1"),
        "PORT": int(os.environ.get("AUTUMN_TEST_PG_PORT", "5432")),
        "NAME": os.environ.get("AUTUMN_TEST_PG_NAME", "test"),
        "USER": os.environ.get("AUTUMN_TEST_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("AUTUMN_TEST_PG_PASSWORD", ""),
        "TEST": {"NAME": f"test_autumn_django_engine_{os.getpid()}"},
    }
}
