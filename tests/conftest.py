from __future__ import annotations

from collections.abc import Iterator

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
def client(autumn_emulator: Emulator) -> AutumnClient:
    """The settings-configured client, answered in-process by the emulator."""
    return get_client()


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
