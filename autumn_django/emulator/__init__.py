"""A local stand-in for Autumn's customers API.

``Emulator`` is the behaviour; ``EmulatorServer`` serves it over HTTP
(``python -m autumn_django.emulator``); :mod:`autumn_django.testing` serves it
in-process to ``requests`` through ``responses``.
"""

from .core import Emulator, LoggedRequest, Plan, Response
from .server import EmulatorServer

__all__ = ["Emulator", "EmulatorServer", "LoggedRequest", "Plan", "Response"]
