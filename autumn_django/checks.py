"""System checks: settings mistakes reported at ``manage.py check`` time,
rather than on the first user save in production. Registered in
``AppConfig.ready()``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from . import conf, contract
from .compat import task_backends


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(f"{problem.name} {problem.message}", hint=problem.hint or None, id="autumn_django.E001")
        for problem in conf.problems()
    ]
    for key, close in conf.unknown_keys():
        messages.append(
            Warning(
                f'AUTUMN["{key}"] is not an autumn-django setting and is ignored.',
                hint=f'Did you mean "{close}"?' if close else "See the settings reference in the docs.",
                id="autumn_django.W002",
            )
        )
    secret_key = conf.raw().get("SECRET_KEY")
    if settings.DEBUG and isinstance(secret_key, str) and contract.key_env(secret_key) == "live":
        messages.append(
            Warning(
                'AUTUMN["SECRET_KEY"] is a live key (am_sk_live_...) while DEBUG is True.',
                hint="Use a sandbox key (am_sk_test_...) in development, so that test "
                "sign-ups do not become real billing customers.",
                id="autumn_django.W001",
            )
        )
    messages.extend(_check_task_routing())
    return messages


def _check_task_routing() -> list[CheckMessage]:
    """The backend alias and queue the sync tasks go to must exist, or every
    save would log an enqueue failure."""
    values = {**conf.DEFAULTS, **conf.raw()}
    alias, queue = values["TASK_BACKEND"], values["TASK_QUEUE"]
    if not isinstance(alias, str) or not isinstance(queue, str):
        return []  # reported by conf.problems()
    if alias not in task_backends.settings:
        return [
            Error(
                f'AUTUMN["TASK_BACKEND"] is {alias!r}, which is not an alias in settings.TASKS.',
                hint=f"Use one of: {', '.join(sorted(task_backends.settings))}.",
                id="autumn_django.E002",
            )
        ]
    queues = task_backends[alias].queues
    if queues and queue not in queues:
        return [
            Error(
                f'AUTUMN["TASK_QUEUE"] is {queue!r}, which task backend {alias!r} does not serve.',
                hint=f'Add it to settings.TASKS["{alias}"]["QUEUES"] or use one of: '
                f"{', '.join(sorted(queues))}.",
                id="autumn_django.E002",
            )
        ]
    return []
