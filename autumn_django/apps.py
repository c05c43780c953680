from django.apps import AppConfig
from django.core import checks


class AutumnConfig(AppConfig):
    name = "autumn_django"
    verbose_name = "Autumn"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers
        from .checks import check_deploy, check_settings

        checks.register(check_settings, "autumn")
        checks.register(check_deploy, "autumn", deploy=True)
        receivers.connect()
