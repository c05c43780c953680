"""The customer's billing state in the mirror: subscriptions, purchases,
balances and flags in tables, and the read helpers that need no request."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import call_command
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext

from autumn_django import billing, sync
from autumn_django.client import get_client
from autumn_django.models import Customer, CustomerFeature, CustomerPlan

pytestmark = pytest.mark.django_db


@pytest.fixture
def row(autumn_emulator, make_user, commit):
    autumn_emulator.add_plan("pro")
    with commit():
        user = make_user()
    return Customer.objects.of(user).get()


def test_a_refresh_after_an_attach_writes_the_subscription_in_columns(autumn_emulator, row):
    autumn_emulator.attach(row.customer_id, "pro")
    sync.refresh(row)
    plan = CustomerPlan.objects.get(customer=row)
    assert (plan.kind, plan.plan_id, plan.status, plan.past_due) == ("subscription", "pro", "active", False)
    assert plan.current_period_end is not None and plan.current_period_end > plan.current_period_start


def test_customers_can_be_queried_by_plan(autumn_emulator, row, make_user, commit):
    with commit():
        other = make_user("otto")
    autumn_emulator.attach(row.customer_id, "pro")
    sync.refresh(row)
    sync.refresh(Customer.objects.of(other).get())
    on_pro = Customer.objects.filter(plans__plan_id="pro", plans__status="active")
    assert list(on_pro) == [row]


def test_the_read_helpers_answer_from_the_row_without_a_query(autumn_emulator, row):
    autumn_emulator.attach(row.customer_id, "pro")
    sync.refresh(row)
    row = Customer.objects.get(pk=row.pk)
    with CaptureQueriesContext(connection) as queries:
        assert row.active_plan_ids == ["pro"]
        assert row.has_plan("pro") and not row.has_plan("team")
    assert queries.captured_queries == []


def test_a_canceled_subscription_stays_active_until_it_expires(autumn_emulator, row):
    autumn_emulator.attach(row.customer_id, "pro")
    autumn_emulator.cancel(row.customer_id, "pro")
    sync.refresh(row)
    row.refresh_from_db()
    assert row.has_plan("pro")
    assert CustomerPlan.objects.get(customer=row).canceled_at is not None
    autumn_emulator.expire(row.customer_id, "pro")
    sync.refresh(row)
    row.refresh_from_db()
    assert not row.has_plan("pro")
    assert CustomerPlan.objects.get(customer=row).status == "expired"


def test_balances_and_flags_become_feature_rows_and_helpers():
    data = {
        "subscriptions": [],
        "purchases": [{"plan_id": "credits", "expires_at": None}],
        "balances": {
            "messages": {"feature_id": "messages", "granted": 100, "remaining": 0, "usage": 100},
            "seats": {"feature_id": "seats", "unlimited": True, "remaining": None},
        },
        "flags": {"sso": {"id": "f1", "feature_id": "sso", "plan_id": "pro", "expires_at": None}},
    }
    row = Customer(data=data)
    assert row.active_plan_ids == ["credits"]
    assert row.balance("messages")["granted"] == 100 and row.balance("nope") is None
    assert not row.has_feature("messages")  # used up
    assert row.has_feature("seats") and row.has_feature("sso") and not row.has_feature("nope")


def test_storing_balances_and_flags_makes_one_row_each(row):
    data = {
        "balances": {
            "messages": {"granted": 100, "remaining": 40, "usage": 60, "next_reset_at": 1795000000000}
        },
        "flags": {"sso": {"plan_id": "pro"}},
    }
    billing.store([(row.pk, data)])
    features = {feature.feature_id: feature for feature in CustomerFeature.objects.filter(customer=row)}
    assert (features["messages"].kind, features["messages"].remaining) == ("balance", 40.0)
    assert features["messages"].next_reset_at.year == 2026
    assert (features["sso"].kind, features["sso"].plan_id) == ("flag", "pro")
    assert list(Customer.objects.filter(features__feature_id="sso")) == [row]


def test_storing_again_replaces_what_was_stored(row):
    billing.store([(row.pk, {"subscriptions": [{"plan_id": "pro", "status": "active"}]})])
    billing.store([(row.pk, {"subscriptions": [{"plan_id": "team", "status": "active"}]})])
    assert list(CustomerPlan.objects.filter(customer=row).values_list("plan_id", flat=True)) == ["team"]


def test_hostile_billing_values_are_stored_as_far_as_they_make_sense(row):
    billing.store(
        [
            (
                row.pk,
                {
                    "subscriptions": [
                        {"plan_id": "p" * 500, "started_at": "yesterday", "quantity": True},
                        "junk",
                    ],
                    "purchases": {"not": "a list"},
                    "balances": {"x": {"granted": float("nan"), "next_reset_at": 1e30}, "y": 3},
                },
            )
        ]
    )
    plan = CustomerPlan.objects.get(customer=row)
    assert (len(plan.plan_id), plan.started_at, plan.quantity) == (255, None, None)
    feature = CustomerFeature.objects.get(customer=row)
    assert (feature.granted, feature.next_reset_at) == (None, None)


def test_a_push_that_changes_no_billing_writes_no_billing_rows(autumn_emulator, row, make_user, commit):
    user = row.source
    user.email = "jane.doe@example.com"
    with commit(), CaptureQueriesContext(connection) as queries:
        user.save()
    assert not [query for query in queries.captured_queries if "customerplan" in query["sql"]]


def test_a_push_whose_answer_carries_a_plan_stores_it(autumn_emulator, row, commit):
    autumn_emulator.attach(row.customer_id, "pro")  # unseen: no refresh
    user = row.source
    user.email = "jane.doe@example.com"
    with commit():
        user.save()  # the update's answer carries the subscription
    assert list(CustomerPlan.objects.filter(customer=row).values_list("plan_id", flat=True)) == ["pro"]


def test_autumn_sync_pull_stores_billing_state(autumn_emulator, row):
    autumn_emulator.attach(row.customer_id, "pro")
    call_command("autumn_sync", "--pull", stdout=io.StringIO())
    assert CustomerPlan.objects.filter(customer=row, plan_id="pro").exists()


# --- in templates ---------------------------------------------------------------------------------


def render(text, **context):
    return Template("{% load autumn %}" + text).render(Context(context))


def test_the_has_plan_filter_reads_a_users_plan(autumn_emulator, row):
    autumn_emulator.attach(row.customer_id, "pro")
    sync.refresh(row)
    user = row.source
    assert render('{% if user|has_plan:"pro" %}pro{% else %}free{% endif %}', user=user) == "pro"
    assert render('{% if user|has_plan:"team" %}team{% else %}no{% endif %}', user=user) == "no"


def test_an_anonymous_user_has_no_plan_and_costs_no_query():
    with CaptureQueriesContext(connection) as queries:
        assert (
            render('{% if user|has_plan:"pro" %}pro{% else %}free{% endif %}', user=AnonymousUser()) == "free"
        )
    assert queries.captured_queries == []


def test_an_objects_row_is_read_once_per_render(autumn_emulator, row):
    user = row.source
    with CaptureQueriesContext(connection) as queries:
        render('{{ user|has_plan:"a" }}{{ user|has_plan:"b" }}{{ user|has_feature:"c" }}', user=user)
    assert len(queries.captured_queries) == 1


def test_the_balance_and_customer_tags(row):
    billing.store([(row.pk, {})])
    Customer.objects.filter(pk=row.pk).update(data={"balances": {"messages": {"remaining": 7}}})
    user = Customer.objects.get(pk=row.pk).source
    text = (
        '{% autumn_balance user "messages" as left %}{{ left.remaining }} '
        "{% autumn_customer user as c %}{{ c.state }}"
    )
    assert render(text, user=user) == "7 synced"


def test_a_refresh_landing_during_a_push_keeps_data_and_tables_agreeing(
    autumn_emulator, row, commit, monkeypatch
):
    """The webhook's refresh writes a new version: the push under way reads
    it again instead of recording its older answer over it."""
    client = get_client()
    real_update = client.update_customer
    upgraded = []

    def update_then_upgrade(*args, **kwargs):
        answer = real_update(*args, **kwargs)  # Autumn answered: no plan yet
        if not upgraded:
            upgraded.append(autumn_emulator.attach(row.customer_id, "pro"))  # then the customer pays
            sync.refresh(Customer.objects.get(pk=row.pk))  # and the webhook's refresh lands
        return answer

    monkeypatch.setattr(client, "update_customer", update_then_upgrade)
    user = row.source
    user.first_name = "Jane"
    with commit():
        user.save()
    row = Customer.objects.get(pk=row.pk)
    assert row.has_plan("pro")
    assert list(CustomerPlan.objects.filter(customer=row).values_list("plan_id", flat=True)) == ["pro"]
