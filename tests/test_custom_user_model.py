"""The sync engine with a custom user model. AUTH_USER_MODEL is fixed for a
process, so tests/custom_user runs in a pytest of its own."""

from .separate_run import run_pytest


def test_the_engine_works_with_a_uuid_keyed_email_login_user_model():
    run_pytest("tests.settings_custom_user", "tests/custom_user", expected_passed=3)
