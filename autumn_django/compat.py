"""Django's Tasks API: ``django.tasks`` from Django 6, the ``django-tasks``
backport before it. Both read the same ``TASKS`` setting."""

try:
    from django.tasks import TaskResultStatus, task, task_backends
except ImportError:
    from django_tasks import (  # type: ignore[assignment,no-redef]
        TaskResultStatus,
        task,
        task_backends,
    )

__all__ = ["TaskResultStatus", "task", "task_backends"]
