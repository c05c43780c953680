"""The secret key never shows: not in reprs, messages, errors or logs."""

import logging

import pytest

from autumn_django import conf
from autumn_django.client import AutumnClient, get_client
from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.exceptions import AutumnError
from autumn_django.testing import make_secret_key


def test_client_repr_and_str_hide_the_key():
    key = make_secret_key()
    client = AutumnClient(key)
    assert key not in repr(client) and key not in str(client)
    assert key not in repr(client.session.auth)
    assert key not in repr(vars(client))


def test_the_settings_snapshot_hides_the_key(settings):
    key = make_secret_key()
    settings.AUTUMN = {"SECRET_KEY": key}
    assert key not in repr(conf.load())


def test_the_key_is_in_no_log_record_at_debug(caplog, autumn_emulator):
    from django.conf import settings

    key = settings.AUTUMN["SECRET_KEY"]
    caplog.set_level(logging.DEBUG)
    client = get_client()
    client.get_or_create_customer("42")
    with pytest.raises(AutumnError):
        client.get_customer("nobody")
    assert "POST /v1/customers.get -> 404" in caplog.text
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in repr(record.__dict__)


@pytest.mark.http
def test_the_key_is_in_no_log_or_error_through_retries_and_failures(caplog):
    key = make_secret_key()
    caplog.set_level(logging.DEBUG)  # urllib3's own DEBUG lines included
    errors = []
    with EmulatorServer(Emulator()) as server:
        client = AutumnClient(key, base_url=server.url, max_retries=1, backoff_factor=0)
        server.emulator.fail_next(1, status=503, headers={"Retry-After": "0"})
        client.get_or_create_customer("42")
        server.emulator.fail_next(5, drop=True)
        for call in (lambda: client.get_customer("42"), lambda: client.get_customer("nobody")):
            try:
                call()
            except AutumnError as error:
                errors.append(error)
    assert len(errors) == 2
    assert "urllib3" in {record.name.split(".")[0] for record in caplog.records}
    assert key not in caplog.text
    for error in errors:
        assert (
            key not in str(error) and key not in repr(error) and key not in repr(getattr(error, "body", None))
        )


def test_an_error_body_echoing_the_key_is_redacted():
    import responses

    key = make_secret_key()
    with responses.RequestsMock() as mock:
        mock.post(
            "https://api.useautumn.com/v1/customers.get",
            status=401,
            json={"message": f"bad key {key}", "code": "invalid_secret_key", "env": "sandbox"},
        )
        with pytest.raises(AutumnError) as caught:
            AutumnClient(key).get_customer("1")
    assert key not in str(caught.value)
    assert "bad key ***" in str(caught.value)
