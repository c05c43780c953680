"""A local stand-in for Autumn's customers API (and enough billing, with its
webhooks, to send real events).

``Emulator`` is the behaviour; ``EmulatorServer`` serves it over HTTP
(``python -m autumn_django.emulator``); :mod:`autumn_django.testing` serves it
in-process to ``requests`` through ``responses``.
"""

from .core import BillingError, Delivery, Emulator, Endpoint, LoggedRequest, Message, Plan, Response
from .server import EmulatorServer
from .webhooks import make_webhook_secret

__all__ = [
    "BillingError",
    "Delivery",
    "Emulator",
    "EmulatorServer",
    "Endpoint",
    "LoggedRequest",
    "Message",
    "Plan",
    "Response",
    "make_webhook_secret",
]
