"""pytest fixtures for sites that use autumn-django; installed with the
package (a ``pytest11`` entry point), so a suite needs no conftest to use them.

* ``autumn_emulator``: an :class:`~autumn_django.emulator.Emulator` that
  answers every request to Autumn's URL in-process, with ``settings.AUTUMN``
  pointed at it for the test.
  ``autumn_emulator.add_webhook(path, secret,
  transport=autumn_django.testing.django_transport())`` delivers its
  webhook events to the site in-process, in the test's thread.
* ``autumn_emulator_server``: the same behind a real HTTP server on a free
  port (``.url``, ``.emulator``), for tests that need a socket.
* ``autumn_hostile_server``: a :class:`~autumn_django.testing.HostileServer`
  on a free loopback port, with ``settings.AUTUMN`` pointed at it and short
  timeouts; the test picks how it misbehaves (``.drip()``, ``.huge_body()``,
  ``.html_404()``, ``.customer(id="other")``...).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .emulator import Emulator, EmulatorServer
from .testing import HostileServer, emulate, hostile_server, serve


@pytest.fixture
def autumn_emulator() -> Iterator[Emulator]:
    with emulate() as emulator:
        yield emulator


@pytest.fixture
def autumn_emulator_server() -> Iterator[EmulatorServer]:
    with serve() as server:
        yield server


@pytest.fixture
def autumn_hostile_server() -> Iterator[HostileServer]:
    with hostile_server() as server:
        yield server
