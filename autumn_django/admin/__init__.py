"""The admin: importing this package registers ``CustomerAdmin`` and
``RemoteCustomerAdmin`` (``admin.autodiscover`` imports it for every app in
``INSTALLED_APPS``).

``options`` holds the ModelAdmins, ``actions`` the mirror's actions,
``views`` the pages of Autumn's own customer list, ``pagination`` their page
links, ``webhooks`` the webhook events' page, and ``helpers`` what several
of them share (a row's object, a user's or a team's, read and linked).
"""

from .helpers import admin_client, describe, object_admin_url, user_admin_url
from .options import CustomerAdmin, RemoteCustomerAdmin
from .webhooks import WebhookEventAdmin

__all__ = [
    "CustomerAdmin",
    "RemoteCustomerAdmin",
    "WebhookEventAdmin",
    "admin_client",
    "describe",
    "object_admin_url",
    "user_admin_url",
]
