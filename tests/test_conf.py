import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from autumn_django import conf
from autumn_django.client import get_client
from autumn_django.exceptions import AutumnImproperlyConfigured
from autumn_django.testing import make_secret_key

KEY = make_secret_key()


def autumn(**values):
    return override_settings(AUTUMN={"SECRET_KEY": KEY, **values})


def test_defaults_fill_what_the_site_leaves_out():
    with autumn():
        settings = conf.load()
    assert settings.base_url == "https://api.useautumn.com"
    assert settings.api_version == "2.1"
    assert settings.timeout == (3.05, 15.0)
    assert settings.max_retries == 3


def test_settings_are_read_when_used_so_override_settings_applies():
    with autumn(API_VERSION="2.3", TIMEOUT=7, BASE_URL="http://127.0.0.1:9/"):
        settings = conf.load()
    assert (settings.api_version, settings.timeout, settings.base_url) == (
        "2.3",
        (7.0, 7.0),
        "http://127.0.0.1:9",
    )


def test_a_missing_secret_key_names_the_setting_to_add():
    with override_settings(AUTUMN={}):
        with pytest.raises(ImproperlyConfigured, match=r'AUTUMN\["SECRET_KEY"\] is missing'):
            conf.load()


def test_no_autumn_setting_at_all_is_a_missing_secret_key():
    with override_settings():
        from django.conf import settings

        del settings.AUTUMN
        with pytest.raises(AutumnImproperlyConfigured, match="SECRET_KEY"):
            conf.load()


def test_a_publishable_key_is_refused_with_a_hint():
    with override_settings(AUTUMN={"SECRET_KEY": "am_pk_test_" + "a" * 42}):
        with pytest.raises(AutumnImproperlyConfigured, match="publishable key"):
            conf.load()


def test_a_malformed_key_is_described_without_being_shown():
    bad_key = "am_sk_test_" + "s3cr3t" * 3
    with override_settings(AUTUMN={"SECRET_KEY": bad_key}):
        with pytest.raises(AutumnImproperlyConfigured) as caught:
            conf.load()
    assert "42 letters and digits" in str(caught.value)
    assert bad_key not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"API_VERSION": "2.9"}, "API_VERSION"),
        ({"API_VERSION": "1.2"}, "API_VERSION"),
        ({"BASE_URL": "api.useautumn.com"}, "BASE_URL"),
        ({"BASE_URL": "ftp://api.useautumn.com"}, "BASE_URL"),
        ({"BASE_URL": "https://api.useautumn.com?key=1"}, "BASE_URL"),
        ({"TIMEOUT": 0}, "TIMEOUT"),
        ({"TIMEOUT": (1, 2, 3)}, "TIMEOUT"),
        ({"TIMEOUT": True}, "TIMEOUT"),
        ({"TIMEOUT": (1, "15")}, "TIMEOUT"),
        ({"MAX_RETRIES": -1}, "MAX_RETRIES"),
        ({"MAX_RETRIES": True}, "MAX_RETRIES"),
        ({"MAX_RETRIES": 2.5}, "MAX_RETRIES"),
        # the sync engine's settings
        ({"CUSTOMER_ID": 42}, "CUSTOMER_ID"),
        ({"CUSTOMER_ID": "tests.mapping_functions.__doc__"}, "CUSTOMER_ID"),
        ({"CUSTOMER_DATA": "tests.mapping_functions.nowhere"}, "CUSTOMER_DATA"),
        ({"CUSTOMER_DATA": "no_such_module.customer_data"}, "CUSTOMER_DATA"),
        ({"SHOULD_SYNC": "tests.mapping_functions.__doc__"}, "SHOULD_SYNC"),
        ({"SHOULD_SYNC": True}, "SHOULD_SYNC"),
        ({"DELETE_POLICY": "archive"}, "DELETE_POLICY"),
        ({"DELETE_POLICY": None}, "DELETE_POLICY"),
        ({"DELETE_IN_STRIPE": "yes"}, "DELETE_IN_STRIPE"),
        ({"DELETE_IN_STRIPE": None}, "DELETE_IN_STRIPE"),
        ({"RAISE_ERRORS": 1}, "RAISE_ERRORS"),
        ({"CREATE_IN_STRIPE": "no"}, "CREATE_IN_STRIPE"),
        ({"SEND_EMAIL_RECEIPTS": 0}, "SEND_EMAIL_RECEIPTS"),
        ({"AUTO_ENABLE_PLAN_ID": ""}, "AUTO_ENABLE_PLAN_ID"),
        ({"AUTO_ENABLE_PLAN_ID": 5}, "AUTO_ENABLE_PLAN_ID"),
        ({"TASK_BACKEND": ""}, "TASK_BACKEND"),
        ({"TASK_BACKEND": None}, "TASK_BACKEND"),
        ({"TASK_QUEUE": None}, "TASK_QUEUE"),
        ({"TASK_QUEUE": ""}, "TASK_QUEUE"),
        ({"RETRY_DELAY": 0}, "RETRY_DELAY"),
        ({"RETRY_DELAY": True}, "RETRY_DELAY"),
        ({"RETRY_MAX_DELAY": "1h"}, "RETRY_MAX_DELAY"),
        ({"RETRY_MAX_DELAY": -60}, "RETRY_MAX_DELAY"),
        ({"RATE_LIMITS": 25}, "RATE_LIMITS"),
        ({"RATE_LIMITS": True}, "RATE_LIMITS"),
        ({"RATE_LIMITS": {"customers.upsert": 5}}, "RATE_LIMITS"),
        ({"RATE_LIMITS": {"customers.update": -1}}, "RATE_LIMITS"),
        ({"RATE_LIMITS": {"customers.update": True}}, "RATE_LIMITS"),
        ({"RATE_LIMITS": {"customers.update": "25"}}, "RATE_LIMITS"),
        ({"ADMIN_TIMEOUT": (2, 0)}, "ADMIN_TIMEOUT"),
        ({"ADMIN_TIMEOUT": "fast"}, "ADMIN_TIMEOUT"),
        ({"ADMIN_TIMEOUT": -1}, "ADMIN_TIMEOUT"),
    ],
)
def test_malformed_settings_raise_naming_the_setting(values, setting):
    with autumn(**values):
        with pytest.raises(AutumnImproperlyConfigured, match=rf'AUTUMN\["{setting}"\]'):
            conf.load()


def always(user):
    return True


@pytest.mark.parametrize(
    ("values", "attribute", "expected"),
    [
        ({"TIMEOUT": [2, 9.5]}, "timeout", (2.0, 9.5)),
        ({"MAX_RETRIES": 0}, "max_retries", 0),
        ({"CUSTOMER_ID": always}, "customer_id", always),
        ({"SHOULD_SYNC": "tests.test_conf.always"}, "should_sync", always),
        ({"DELETE_POLICY": "delete"}, "delete_policy", "delete"),
        ({"DELETE_IN_STRIPE": True}, "delete_in_stripe", True),
        ({"CREATE_IN_STRIPE": False}, "create_in_stripe", False),
        ({"CREATE_IN_STRIPE": None}, "create_in_stripe", None),
        ({"SEND_EMAIL_RECEIPTS": True}, "send_email_receipts", True),
        ({"AUTO_ENABLE_PLAN_ID": "free"}, "auto_enable_plan_id", "free"),
        ({"AUTO_ENABLE_PLAN_ID": None}, "auto_enable_plan_id", None),
        ({"TASK_BACKEND": "billing"}, "task_backend", "billing"),
        ({"TASK_QUEUE": "autumn"}, "task_queue", "autumn"),
        ({"RETRY_DELAY": 0.5}, "retry_delay", 0.5),
        ({"RETRY_MAX_DELAY": 60}, "retry_max_delay", 60.0),
        ({"ADMIN_TIMEOUT": (1, 3)}, "admin_timeout", (1.0, 3.0)),
    ],
)
def test_well_formed_values_of_each_setting_are_accepted(values, attribute, expected):
    with autumn(**values):
        assert getattr(conf.load(), attribute) == expected


def test_a_rate_limit_of_none_leaves_that_route_unpaced():
    with autumn(RATE_LIMITS={"customers.update": None, "customers.delete": 2.5}):
        limits = conf.load().rate_limits
    assert (limits["customers.update"], limits["customers.delete"]) == (None, 2.5)
    assert limits["customers.list"] == pytest.approx(4.5)  # the others: published, less 10%


def test_every_mistake_in_the_engine_settings_is_listed_at_once():
    with autumn(DELETE_POLICY="archive", RETRY_DELAY=0, TASK_QUEUE="", RATE_LIMITS=25):
        problems = conf.problems()
    assert sorted(problem.setting for problem in problems) == [
        "DELETE_POLICY",
        "RATE_LIMITS",
        "RETRY_DELAY",
        "TASK_QUEUE",
    ]


def test_every_engine_setting_is_an_attribute_of_the_snapshot():
    from tests.mapping_functions import customer_data

    with autumn(
        CUSTOMER_DATA="tests.mapping_functions.customer_data",
        DELETE_POLICY="keep",
        RETRY_DELAY=5,
        RATE_LIMITS={"customers.update": 3},
        ADMIN_TIMEOUT=1,
        RAISE_ERRORS=True,
    ):
        settings = conf.load()
    assert settings.customer_data is customer_data  # the dotted path, imported
    assert (settings.delete_policy, settings.retry_delay, settings.admin_timeout) == ("keep", 5.0, (1.0, 1.0))
    assert settings.rate_limits["customers.update"] == 3
    assert settings.rate_limits["customers.list"] == pytest.approx(4.5)  # published, less 10%
    assert settings.raise_errors is True and settings.env == "sandbox"


def test_rate_limits_false_turns_pacing_off():
    with autumn(RATE_LIMITS=False):
        assert conf.load().rate_limits is None


def test_the_snapshot_is_built_once_and_rebuilt_when_the_setting_changes(monkeypatch):
    built = []
    original = conf._build
    monkeypatch.setattr(conf, "_build", lambda: built.append(1) or original())
    with autumn(RETRY_DELAY=7):
        first = conf.load()
        assert conf.load() is first
        assert len(built) == 1
    with autumn(RETRY_DELAY=9):
        assert conf.load().retry_delay == 9.0
    assert len(built) == 2


def test_raise_errors_is_read_even_when_the_settings_are_broken():
    with override_settings(AUTUMN={"RAISE_ERRORS": True}):  # no key: load() fails
        assert conf.raise_errors() is True
    with override_settings(AUTUMN={}):
        assert conf.raise_errors() is False


def test_the_snapshot_repr_hides_the_secret_key():
    with autumn():
        assert KEY not in repr(conf.load())


def test_the_autumn_setting_must_be_a_dict():
    with override_settings(AUTUMN="am_sk_test_x"):
        problems = conf.problems()
    assert [problem.setting for problem in problems] == ["*"]
    assert "must be a dict" in problems[0].message


def test_get_client_is_shared_for_one_configuration():
    with autumn():
        assert get_client() is get_client()


def test_get_client_follows_a_changed_setting():
    with autumn():
        first = get_client()
    with autumn(API_VERSION="2.3"):
        second = get_client()
    assert second is not first
    assert second.api_version == "2.3"


def test_get_client_hands_every_thread_the_same_client():
    seen = []
    with autumn(TIMEOUT=4.5):
        threads = [threading.Thread(target=lambda: seen.append(get_client())) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(seen) == 16
    assert len({id(client) for client in seen}) == 1
