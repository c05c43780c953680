"""The migration from the user foreign key to the generic link, run on a
database holding rows, as a site upgrading would."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from autumn_django.models import Customer

BEFORE = [("autumn_django", "0004_webhook_events")]
AFTER = [("autumn_django", "0005_generic_source")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema(transactional_db, django_user_model):
    """The schema before customer sources, holding three rows: two users'
    and one whose user was already deleted (waiting for Autumn)."""
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate(executor_leaf())


def executor_leaf():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes("autumn_django")


def test_existing_rows_keep_their_users_after_the_migration(old_schema, django_user_model):
    OldCustomer = old_schema.get_model("autumn_django", "Customer")
    ada = django_user_model.objects.create(username="ada")
    bob = django_user_model.objects.create(username="bob")
    OldCustomer.objects.create(user_id=ada.pk, env="sandbox", customer_id=str(ada.pk), state="synced")
    OldCustomer.objects.create(user_id=bob.pk, env="sandbox", customer_id="bob-id", state="pending")
    OldCustomer.objects.create(user_id=None, env="sandbox", customer_id="gone-user", state="deleting")

    migrate(AFTER)

    rows = {row.customer_id: row for row in Customer.objects.all()}
    user_type = ContentType.objects.get_for_model(django_user_model)
    assert (rows[str(ada.pk)].content_type_id, rows[str(ada.pk)].object_id) == (user_type.pk, str(ada.pk))
    assert rows["bob-id"].source == bob and rows["bob-id"].state == "pending"
    assert (rows["gone-user"].object_id, rows["gone-user"].state) == (None, "deleting")
    assert Customer.objects.of(ada).get().customer_id == str(ada.pk)


def test_the_migration_can_be_reversed(old_schema, django_user_model):
    OldCustomer = old_schema.get_model("autumn_django", "Customer")
    ada = django_user_model.objects.create(username="ada")
    OldCustomer.objects.create(user_id=ada.pk, env="sandbox", customer_id="ada", state="synced")
    migrate(AFTER)
    apps = migrate(BEFORE)
    assert apps.get_model("autumn_django", "Customer").objects.get(customer_id="ada").user_id == ada.pk


def test_the_billing_tables_are_filled_from_what_the_mirror_holds(transactional_db, django_user_model):
    from autumn_django.models import CustomerPlan

    apps = migrate([("autumn_django", "0006_billing_state")])
    try:
        OldCustomer = apps.get_model("autumn_django", "Customer")
        data = {
            "subscriptions": [{"plan_id": "pro", "status": "active"}],
            "balances": {"seats": {"granted": 5}},
        }
        row = OldCustomer.objects.create(env="sandbox", customer_id="c1", state="synced", data=data)
        OldCustomer.objects.create(env="sandbox", customer_id="c2", state="pending", data=None)
        migrate([("autumn_django", "0007_billing_backfill")])
        assert list(CustomerPlan.objects.values_list("customer_id", "plan_id")) == [(row.pk, "pro")]
        assert list(Customer.objects.filter(features__feature_id="seats").values_list("pk", flat=True)) == [
            row.pk
        ]
    finally:
        migrate(executor_leaf())
