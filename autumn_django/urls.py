"""autumn-django's URLs, for the site's URLconf::

    path("autumn/", include("autumn_django.urls")),

gives Autumn's webhook endpoint at ``/autumn/webhooks/``.
"""

from django.urls import path

from . import views

app_name = "autumn_django"

urlpatterns = [
    path("webhooks/", views.webhook, name="webhook"),
]
