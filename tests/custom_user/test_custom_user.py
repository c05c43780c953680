"""Run by tests/test_custom_user_model.py in a pytest of its own, with
AUTH_USER_MODEL = "custom_user.User" (tests/settings_custom_user.py)."""

import uuid

import pytest

from autumn_django.models import Customer

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_uuid_keyed_email_named_user_is_synced(autumn_emulator, django_user_model):
    user = django_user_model.objects.create_user("ada@example.com", password="x")
    assert isinstance(user.pk, uuid.UUID)
    remote = autumn_emulator.customer(str(user.pk))
    assert (remote["name"], remote["email"]) == ("ada@example.com", "ada@example.com")
    assert remote["metadata"] == {"django_user_id": str(user.pk)}
    assert Customer.objects.of(user).get().state == "synced"


def test_an_unchanged_save_of_a_custom_user_costs_no_request(autumn_emulator, django_user_model):
    user = django_user_model.objects.create_user("ada@example.com", password="x")
    before = len(autumn_emulator.requests())
    user.save()
    assert len(autumn_emulator.requests()) == before


def test_changing_and_deleting_a_custom_user_follows_in_autumn(autumn_emulator, django_user_model):
    user = django_user_model.objects.create_user("ada@example.com", password="x")
    user.email = "lovelace@example.com"
    user.save()
    assert autumn_emulator.customer(str(user.pk))["email"] == "lovelace@example.com"
    customer_id = str(user.pk)
    user.delete()
    assert autumn_emulator.customer(customer_id) is None and Customer.objects.count() == 0
