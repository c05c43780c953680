from django.apps import AppConfig


class AutumnConfig(AppConfig):
    name = "autumn_django"
    verbose_name = "Autumn"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (checks register on import)

        signals.connect()
