"""Django's Tasks API: ``django.tasks`` from Django 6, the ``django-tasks``
backport before it. Both read the same ``TASKS`` setting."""

try:
    from django.tasks import TaskResultStatus, task, task_backends  # type: ignore[import-not-found]
except ImportError:
    from django_tasks import TaskResultStatus, task, task_backends

__all__ = ["TaskResultStatus", "task", "task_backends"]
