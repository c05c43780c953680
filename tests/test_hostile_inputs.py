"""The site's own mapping code may raise anything or return anything: one
user's bad data fails that user's row, with the setting named, and never
the save, the task or a bulk run; nothing Autumn or the mirror would refuse
is sent or written. Also run on PostgreSQL (test_services.py), where a value
the columns cannot hold raises DataError rather than being stored."""

from __future__ import annotations

import math

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from autumn_django.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping(settings):
    """Set the mapping settings for one test."""

    def set_(**values):
        settings.AUTUMN = {**settings.AUTUMN, **values}

    return set_


@pytest.fixture
def save_user(django_user_model, django_capture_on_commit_callbacks):
    """Create a user and run what its commit runs (the sync)."""

    def make(username="jane", **fields):
        fields.setdefault("email", f"{username}@example.com")
        with django_capture_on_commit_callbacks(execute=True):
            return django_user_model.objects.create_user(username=username, password="x", **fields)

    return make


def failed_row(user):
    row = Customer.objects.of(user).get()
    assert row.state == Customer.State.FAILED
    return row


def raise_zero_division(user):
    return 1 / 0


@pytest.mark.parametrize("setting", ["CUSTOMER_ID", "CUSTOMER_DATA", "SHOULD_SYNC"])
def test_a_mapping_function_that_raises_fails_the_row_naming_the_setting(
    autumn_emulator, mapping, save_user, setting
):
    mapping(**{setting: raise_zero_division})
    user = save_user()  # the save itself does not raise
    row = failed_row(user)
    assert f"AUTUMN['{setting}'] raised ZeroDivisionError" in row.last_error
    assert "division by zero" in row.last_error
    assert autumn_emulator.requests() == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"name": 42}, "is a int, not a string"),
        ({"name": "x" * 256}, "256 characters long (at most 255)"),
        ({"email": "a" * 250 + "@x.io"}, "255 characters long (at most 254)"),
        ({"fingerprint": "fp\x00"}, "NUL character"),
        ({"name": "bad \udc80 text"}, "lone surrogate"),
        ({"metadata": {"score": math.nan}}, "JSON cannot carry"),
        ({"metadata": {"score": math.inf}}, "JSON cannot carry"),
        ({"metadata": {1: "one"}}, "key that is a int"),
        ({"metadata": {"note": "a\x00b"}}, "NUL character"),
        ({"metadata": {"set": {1, 2}}}, "not valid JSON"),
        ({"metadata": "gold"}, "is a str, not a dict"),
        ({"metadata": {"big": "x" * 70_000}}, "bytes as JSON"),
    ],
)
def test_customer_data_autumn_or_the_mirror_would_refuse_is_never_sent(
    autumn_emulator, mapping, save_user, data, problem
):
    mapping(CUSTOMER_DATA=lambda user: {"name": "Jane", **data})
    user = save_user()
    row = failed_row(user)
    assert "AUTUMN['CUSTOMER_DATA']" in row.last_error
    assert problem in row.last_error
    assert autumn_emulator.requests() == []


def test_deeply_nested_metadata_is_refused_before_it_breaks_an_encoder(autumn_emulator, mapping, save_user):
    nested: dict = {}
    inner = nested
    for _ in range(5000):
        inner["x"] = {}
        inner = inner["x"]
    mapping(CUSTOMER_DATA=lambda user: {"metadata": nested})
    user = save_user()
    assert "nested deeper than 16 levels" in failed_row(user).last_error
    assert autumn_emulator.requests() == []


def test_a_customer_id_longer_than_the_mirror_holds_is_refused(autumn_emulator, mapping, save_user):
    mapping(CUSTOMER_ID=lambda user: "u" * 256)
    user = save_user()
    assert "longer than the mirror's 255 characters" in failed_row(user).last_error
    assert autumn_emulator.requests() == []


def test_a_customer_id_that_is_not_a_string_is_refused(autumn_emulator, mapping, save_user):
    mapping(CUSTOMER_ID=lambda user: user.pk)  # an int, not str(user.pk)
    user = save_user()
    assert "expected string, received number" in failed_row(user).last_error


def test_the_message_of_a_raising_mapping_is_stored_safely(autumn_emulator, mapping, save_user):
    def boom(user):
        raise ValueError("bad\x00byte " + "y" * 5000)

    mapping(CUSTOMER_DATA=boom)
    user = save_user()
    error = failed_row(user).last_error
    assert "\x00" not in error and "\\x00" in error
    assert len(error) < 1000


def test_a_second_user_mapped_to_a_taken_id_gets_a_failed_row_saying_so(autumn_emulator, mapping, save_user):
    mapping(CUSTOMER_ID=lambda user: "shared")
    first = save_user("first")
    second = save_user("second")
    assert Customer.objects.of(first).get().state == Customer.State.SYNCED
    row = failed_row(second)
    assert f"already mirrored by user {first.pk}" in row.last_error
    assert [entry.route for entry in autumn_emulator.requests()] == ["customers.get_or_create"]


def test_a_fixed_mapping_lets_the_failed_user_sync_on_its_next_save(autumn_emulator, mapping, save_user):
    mapping(CUSTOMER_DATA=raise_zero_division)
    user = save_user()
    failed_row(user)
    mapping(CUSTOMER_DATA=None)
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        user.save()
    assert Customer.objects.of(user).get().state == Customer.State.SYNCED
    assert autumn_emulator.customer(str(user.pk))["email"] == "jane@example.com"


@pytest.mark.django_db(transaction=True)
def test_autumn_sync_carries_on_past_users_whose_mapping_raises(
    autumn_emulator, mapping, django_user_model, capsys
):
    from autumn_django.signals import disable_sync

    with disable_sync():
        users = [django_user_model.objects.create_user(f"u{n}", f"u{n}@example.com", "x") for n in range(6)]
    bad = {users[1].pk, users[4].pk}

    def data(user):
        if user.pk in bad:
            raise KeyError("profile")
        return {"name": user.username}

    mapping(CUSTOMER_DATA=data)
    with pytest.raises(CommandError, match="2 failed"):
        call_command("autumn_sync", "--batch-size", "2")
    states = dict(Customer.objects.values_list("object_id", "state"))
    assert {int(pk) for pk, state in states.items() if state == "failed"} == bad
    assert sum(state == "synced" for state in states.values()) == 4
    assert len(autumn_emulator.customers()) == 4
    assert "AUTUMN['CUSTOMER_DATA'] raised KeyError" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_an_answer_the_columns_cannot_hold_fails_that_row_not_the_batch(
    autumn_emulator, django_user_model, capsys
):
    """Autumn may hold what the mirror cannot (metadata with a NUL, set in
    its dashboard). On PostgreSQL the write raises DataError: that row
    fails with the reason and the rest of the batch is written."""
    from autumn_django.signals import disable_sync

    with disable_sync():
        users = [django_user_model.objects.create_user(f"u{n}", f"u{n}@example.com", "x") for n in range(3)]
    autumn_emulator.add_customer(id=str(users[1].pk), metadata={"note": "a\x00b"})
    if connection.vendor != "postgresql":
        call_command("autumn_sync")  # SQLite stores it: nothing to fail
        assert set(Customer.objects.values_list("state", flat=True)) == {"synced"}
        return
    with pytest.raises(CommandError, match="1 failed"):
        call_command("autumn_sync")
    rows = {int(row.object_id): row for row in Customer.objects.all()}
    assert rows[users[1].pk].state == "failed"
    assert "could not store Autumn's answer" in rows[users[1].pk].last_error
    assert {rows[users[0].pk].state, rows[users[2].pk].state} == {"synced"}
