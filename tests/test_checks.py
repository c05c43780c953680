from django.core.checks import Error, Warning
from django.test import override_settings

from autumn_django.checks import check_settings
from autumn_django.testing import make_secret_key


def test_a_correct_configuration_reports_nothing():
    with override_settings(AUTUMN={"SECRET_KEY": make_secret_key()}):
        assert check_settings() == []


def test_a_missing_key_is_an_error_at_check_time():
    with override_settings(AUTUMN={}):
        messages = check_settings()
    assert [(type(m), m.id) for m in messages] == [(Error, "autumn_django.E001")]
    assert 'AUTUMN["SECRET_KEY"] is missing' in messages[0].msg


def test_every_mistake_is_reported_at_once():
    with override_settings(AUTUMN={"SECRET_KEY": "nope", "API_VERSION": "x", "TIMEOUT": -1}):
        messages = check_settings()
    assert sorted(m.msg.split("]")[0] for m in messages) == [
        'AUTUMN["API_VERSION"',
        'AUTUMN["SECRET_KEY"',
        'AUTUMN["TIMEOUT"',
    ]


def test_a_live_key_with_debug_on_is_a_warning():
    with override_settings(DEBUG=True, AUTUMN={"SECRET_KEY": make_secret_key("live")}):
        messages = check_settings()
    assert [(type(m), m.id) for m in messages] == [(Warning, "autumn_django.W001")]


def test_a_live_key_with_debug_off_is_fine():
    with override_settings(DEBUG=False, AUTUMN={"SECRET_KEY": make_secret_key("live")}):
        assert check_settings() == []


def test_a_misspelt_setting_is_a_warning_that_suggests_the_right_name():
    with override_settings(AUTUMN={"SECRET_KEY": make_secret_key(), "MAX_RETRY": 5}):
        messages = check_settings()
    assert [m.id for m in messages] == ["autumn_django.W002"]
    assert messages[0].hint == 'Did you mean "MAX_RETRIES"?'


def test_manage_py_check_runs_the_autumn_checks():
    import pytest
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with override_settings(AUTUMN={}):
        with pytest.raises(SystemCheckError, match="autumn_django.E001"):
            call_command("check")


def test_a_task_backend_alias_missing_from_tasks_is_an_error():
    with override_settings(AUTUMN={"SECRET_KEY": make_secret_key(), "TASK_BACKEND": "billing"}):
        messages = check_settings()
    assert [m.id for m in messages] == ["autumn_django.E002"]
    assert "not an alias in settings.TASKS" in messages[0].msg


def test_a_queue_the_backend_does_not_serve_is_an_error():
    tasks = {
        "default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}
    }
    with override_settings(TASKS=tasks, AUTUMN={"SECRET_KEY": make_secret_key(), "TASK_QUEUE": "billing"}):
        messages = check_settings()
    assert [m.id for m in messages] == ["autumn_django.E002"]
    assert "does not serve" in messages[0].msg
