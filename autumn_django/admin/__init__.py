"""The admin: importing this package registers ``CustomerAdmin`` and
``RemoteCustomerAdmin`` (``admin.autodiscover`` imports it for every app in
``INSTALLED_APPS``).

``options`` holds the ModelAdmins, ``actions`` the mirror's actions,
``views`` the pages of Autumn's own customer list, ``pagination`` their page
links, and ``helpers`` what several of them share.
"""

from .helpers import admin_client, describe, user_admin_url
from .options import CustomerAdmin, RemoteCustomerAdmin

__all__ = ["CustomerAdmin", "RemoteCustomerAdmin", "admin_client", "describe", "user_admin_url"]
