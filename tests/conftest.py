from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from autumn_django.client import AutumnClient, get_client
from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.testing import make_secret_key

# tests/custom_user needs its own user model, so its own process (see
# test_custom_user_model.py); the main run leaves it out.
collect_ignore = [] if django_settings.AUTH_USER_MODEL == "custom_user.User" else ["custom_user"]
# Likewise tests/services, which needs PostgreSQL and Redis (test_services.py).
if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    collect_ignore.append("services")


@pytest.fixture
def autumn_client(autumn_emulator: Emulator) -> AutumnClient:
    """The settings-configured Autumn client, answered in-process by the
    emulator. (``client`` is pytest-django's: Django's test client.)"""
    return get_client()


@pytest.fixture
def autumn_settings(settings: Any) -> Callable[..., None]:
    """Set keys of ``settings.AUTUMN``, keeping the others, for one test:
    ``autumn_settings(DELETE_POLICY="keep")``."""

    def update(**values: Any) -> None:
        settings.AUTUMN = {**settings.AUTUMN, **values}

    return update


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    """Create a user (password ``x``, email ``<username>@example.com`` unless
    given). The save goes through the signals as a site's would."""

    def make(username: str = "jane", **fields: Any) -> Any:
        fields.setdefault("email", f"{username}@example.com")
        return django_user_model.objects.create_user(username=username, password="x", **fields)

    return make


@pytest.fixture
def http_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(Emulator()) as server:
        yield server


@pytest.fixture
def http_client(http_emulator: EmulatorServer) -> Iterator[AutumnClient]:
    """A client over a real socket, with backoff shrunk so retries are quick."""
    with AutumnClient(
        make_secret_key(),
        base_url=http_emulator.url,
        max_retries=2,
        backoff_factor=0.01,
        timeout=(1, 2),
    ) as client:
        yield client


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """``with commit(): ...`` runs the on-commit callbacks registered in the
    block (the sync task, with the ImmediateBackend) at its end, as the
    commit of a real transaction would, without ``transaction=True``. The
    context manager yields the list of callbacks it ran."""
    return functools.partial(django_capture_on_commit_callbacks, execute=True)
