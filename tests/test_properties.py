"""Properties of the engine over random users and random mapping outputs,
found by hypothesis: whatever the site's fields and mapping code give,

- a user's save never raises (``RAISE_ERRORS`` is off);
- every user ends with a mirror row that is ``synced``, or ``failed`` with
  a reason;
- nothing Autumn would refuse is sent (the emulator answers no 400);
- ``autumn_sync`` over all of them finishes (exit 0, or "N failed").

Also run on PostgreSQL (test_services.py), which refuses more than SQLite.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autumn_django.models import Customer

pytestmark = pytest.mark.django_db

# Text as a site's users type it, and as a broken import leaves it.
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.text(alphabet="\x00\ud800ab@. ", max_size=10),
    st.emails(),
)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(TEXT, st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD = st.one_of(st.none(), TEXT, st.integers(), st.just(""))
CUSTOMER_DATA = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "name": FIELD,
            "email": FIELD,
            "fingerprint": FIELD,
            "metadata": st.one_of(JSON, st.none()),
        },
    ),
    st.dictionaries(TEXT, JSON, max_size=3),  # unknown keys
    JSON,  # not even a dict
    st.just("raise"),
)
CUSTOMER_ID = st.one_of(st.just("pk"), TEXT, st.integers(), st.just("raise"))

# The user's own fields are whatever the site's database stores for a user.
STORABLE = st.characters(codec="utf-8", exclude_characters="\x00")
USERS = st.lists(
    st.tuples(
        st.text(STORABLE, min_size=1, max_size=30),
        st.one_of(st.emails(), st.text(STORABLE, max_size=60)),
        CUSTOMER_ID,
        CUSTOMER_DATA,
    ),
    min_size=1,
    max_size=4,
)


def mapped(outputs: dict[int, tuple], index: int):
    """A mapping setting that gives each user its drawn output (or raises)."""

    def function(user):
        value = outputs[user.pk][index]
        if value == "raise":
            raise RuntimeError("the site's mapping broke")
        if value == "pk":
            return str(user.pk)
        return value

    return function


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(users=USERS)
def test_any_users_and_mapping_end_synced_or_failed_with_a_reason(
    users, autumn_emulator, django_user_model, django_capture_on_commit_callbacks, settings
):
    django_user_model.objects.all().delete()
    Customer.objects.all().delete()
    autumn_emulator.reset()
    outputs: dict[int, tuple] = {}
    settings.AUTUMN = {
        **settings.AUTUMN,
        "CUSTOMER_ID": mapped(outputs, 0),
        "CUSTOMER_DATA": mapped(outputs, 1),
    }
    made = []
    for number, (username, email, customer_id, data) in enumerate(users):
        pk = 10_000 + number
        outputs[pk] = (customer_id, data)
        with django_capture_on_commit_callbacks(execute=True):
            # The save never raises, whatever the mapping does.
            made.append(django_user_model.objects.create(pk=pk, username=f"{number}-{username}", email=email))
    rows = {int(row.object_id): row for row in Customer.objects.all()}
    for user in made:
        row = rows.get(user.pk)
        assert row is not None, f"user {user.pk} has no mirror row"
        assert row.state in (Customer.State.SYNCED, Customer.State.FAILED), row.state
        if row.state == Customer.State.FAILED:
            assert row.last_error, "a failed row says why"
    refused = {key: count for key, count in autumn_emulator.statuses.items() if key.endswith(" 400")}
    assert refused == {}, "sent something Autumn refuses"
    try:
        call_command("autumn_sync", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as error:
        assert "failed" in str(error)
    refused = {key: count for key, count in autumn_emulator.statuses.items() if key.endswith(" 400")}
    assert refused == {}, "autumn_sync sent something Autumn refuses"
