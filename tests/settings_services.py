"""Test settings on real servers: PostgreSQL for the database and the
database task backend, Redis for the RQ task backend. Worker processes
started by tests/services read the same settings, with the test database's
name, the emulator's URL and the key passed in the environment."""

import os

from .settings_postgres import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks", "django_tasks_db", "django_rq"]  # noqa: F405
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]},
}
RQ_QUEUES = {"default": {"URL": os.environ.get("AUTUMN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")}}
AUTUMN = {
    **AUTUMN,  # noqa: F405
    **{
        name: os.environ[f"AUTUMN_{name}"]
        for name in ("SECRET_KEY", "BASE_URL", "TASK_BACKEND", "RATE_LIMIT_STORE")
        if f"AUTUMN_{name}" in os.environ
    },
}

if os.environ.get("AUTUMN_TEST_LOG_TO_STDOUT"):  # as a site logging for its containers does
    LOGGING = {
        "version": 1,
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }
