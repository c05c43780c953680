from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "tests.teams"
    label = "teams"
    default_auto_field = "django.db.models.BigAutoField"
