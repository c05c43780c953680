"""System checks: settings mistakes reported at ``manage.py check`` time,
rather than on the first user save in production. Registered in
``AppConfig.ready()``: :func:`check_settings` always, :func:`check_deploy`
under ``manage.py check --deploy``. Neither raises, whatever
``settings.AUTUMN`` holds, and neither shows the secret key or a URL's
credentials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from . import conf, contract, sources
from .compat import task_backends


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(f"{problem.name} {problem.message}", hint=problem.hint or None, id="autumn_django.E001")
        for problem in conf.problems()
    ]
    for check in (_check_unknown_keys, _check_live_key, _check_task_routing, _check_sources):
        messages.extend(_guarded(check))
    return messages


def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``BASE_URL`` over plain http to another machine: the secret key and
    customers' data would cross the network unencrypted."""
    return _guarded(_check_plain_http)


def _guarded(check: Callable[[], list[CheckMessage]]) -> list[CheckMessage]:
    """The check's messages; nothing when a hostile value makes it raise
    (conf.problems() reports that value)."""
    try:
        return check()
    except Exception:
        return []


def _check_sources() -> list[CheckMessage]:
    """What ``CUSTOMER_SOURCES`` lists must import, be a CustomerSource with
    an installed model, and give ids that cannot meet (E003); the shape of
    the setting is E001's."""
    if any(problem.setting == "CUSTOMER_SOURCES" for problem in conf.problems()):
        return []
    return [
        Error(f'AUTUMN["CUSTOMER_SOURCES"] {message}', hint=hint or None, id="autumn_django.E003")
        for message, hint in sources.source_problems()
    ]


def _check_unknown_keys() -> list[CheckMessage]:
    return [
        Warning(
            f"{name} is not an autumn-django setting and is ignored.",
            hint=f'Did you mean "{close}"?' if close else "See the settings reference in the docs.",
            id="autumn_django.W002",
        )
        for name, close in conf.unknown_keys()
    ]


def _check_live_key() -> list[CheckMessage]:
    secret_key = conf.merged().get("SECRET_KEY")
    if settings.DEBUG and isinstance(secret_key, str) and contract.key_env(secret_key) == "live":
        return [
            Warning(
                'AUTUMN["SECRET_KEY"] is a live key (am_sk_live_...) while DEBUG is True.',
                hint="Use a sandbox key (am_sk_test_...) in development, so that test "
                "sign-ups do not become real billing customers.",
                id="autumn_django.W001",
            )
        ]
    return []


def _check_plain_http() -> list[CheckMessage]:
    url = conf.merged().get("BASE_URL")
    if not isinstance(url, str) or conf.base_url_problem(url) is not None:
        return []  # an E001 already
    parts = urlsplit(url)
    if parts.scheme != "http" or conf.is_local_host(parts.hostname or ""):
        return []
    return [
        Warning(
            f'AUTUMN["BASE_URL"] is {conf.redact_url(url)!r}: plain http to a host that is not this '
            "machine, so the secret key and customers' data cross the network unencrypted.",
            hint="Use https://. Plain http is for an emulator or a self-hosted Autumn on this "
            "machine (localhost, 127.0.0.1, [::1]).",
            id="autumn_django.W003",
        )
    ]


def _check_task_routing() -> list[CheckMessage]:
    """The backend alias and queue the sync tasks go to must exist, or every
    save would log an enqueue failure."""
    values = conf.merged()
    alias, queue = values["TASK_BACKEND"], values["TASK_QUEUE"]
    if not isinstance(alias, str) or not isinstance(queue, str):
        return []  # reported by conf.problems()
    if alias not in task_backends.settings:
        return [
            Error(
                f'AUTUMN["TASK_BACKEND"] is {conf.show(alias)}, which is not an alias in settings.TASKS.',
                hint=f"Use one of: {', '.join(sorted(task_backends.settings))}.",
                id="autumn_django.E002",
            )
        ]
    queues = task_backends[alias].queues
    if queues and queue not in queues:
        return [
            Error(
                f'AUTUMN["TASK_QUEUE"] is {conf.show(queue)}, which task backend {alias!r} does not serve.',
                hint=f'Add it to settings.TASKS["{alias}"]["QUEUES"] or use one of: '
                f"{', '.join(sorted(queues))}.",
                id="autumn_django.E002",
            )
        ]
    return []
