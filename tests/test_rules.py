"""The sync engine's pure rules, one behaviour a test: ``sync.decide`` (what
a row and its user call for), ``sync.differences`` (what an update must
send) and ``sync.retry_delay`` (when a failed sync is tried again).

No emulator, no request and no database: the users and mirror rows are
built in memory and never saved, and these tests have no ``django_db``
mark, so a query made by a rule would fail the test."""

from __future__ import annotations

import datetime

import pytest

from autumn_django import mapping, sync
from autumn_django.exceptions import MappingError, RateLimited, ServerError, ServiceUnavailable
from autumn_django.models import Customer
from autumn_django.sync import Step

ENV = "sandbox"  # the environment of the suite's secret key
CONFIRMED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture
def user(django_user_model):
    """A user as a save hands it to the engine (never saved here)."""
    return django_user_model(pk=7, username="jane", email="jane@example.com", first_name="Jane")


def synced_row(of, **columns):
    """The mirror row of user ``of`` whose current data Autumn has confirmed,
    with ``columns`` changed (``object_id=None``: the user is gone)."""
    values = {
        "object_id": str(of.pk),
        "env": ENV,
        "customer_id": str(of.pk),
        "state": Customer.State.SYNCED,
        "synced_at": CONFIRMED,
        "payload_hash": mapping.payload_for(of).hash,
    }
    return Customer(**{**values, **columns})


# --- decide: what a row and its user call for ----------------------------------------


def test_a_user_never_mirrored_is_pushed_as_a_new_customer(user):
    decision = sync.decide(None, user, ENV)
    assert decision.step == Step.PUSH
    assert decision.payload == mapping.payload_for(user) and decision.payload.customer_id == "7"
    assert (decision.row, decision.obj, decision.known) == (None, user, False)


def test_a_row_whose_payload_autumn_holds_is_unchanged(user):
    row = synced_row(user)
    decision = sync.decide(row, user, ENV)
    assert decision.step == Step.UNCHANGED
    assert (decision.row, decision.known) == (row, True)


def test_force_pushes_even_what_autumn_already_holds(user):
    decision = sync.decide(synced_row(user), user, ENV, force=True)
    assert (decision.step, decision.known) == (Step.PUSH, True)


def test_a_changed_user_is_pushed_to_the_customer_autumn_knows(user):
    row = synced_row(user)
    user.email = "new@example.com"
    decision = sync.decide(row, user, ENV)
    assert (decision.step, decision.known) == (Step.PUSH, True)
    assert decision.payload.fields["email"] == "new@example.com"


def test_a_changed_customer_id_is_a_push_to_the_known_customer_a_rename(user, autumn_settings):
    row = synced_row(user)
    autumn_settings(CUSTOMER_ID=lambda u: f"user-{u.pk}")
    decision = sync.decide(row, user, ENV)
    assert (decision.step, decision.known) == (Step.PUSH, True)
    assert (row.customer_id, decision.payload.customer_id) == ("7", "user-7")


def test_a_failed_row_is_pushed_again_though_its_payload_is_unchanged(user):
    decision = sync.decide(synced_row(user, state=Customer.State.FAILED), user, ENV)
    assert (decision.step, decision.known) == (Step.PUSH, True)


def test_a_row_autumn_never_confirmed_is_not_known_so_it_is_created(user):
    row = synced_row(user, state=Customer.State.PENDING, synced_at=None, payload_hash="")
    decision = sync.decide(row, user, ENV)
    assert (decision.step, decision.known) == (Step.PUSH, False)


def test_a_row_of_another_environment_is_pushed_as_new_in_this_one(user):
    decision = sync.decide(synced_row(user, env="live"), user, ENV)
    assert (decision.step, decision.known) == (Step.PUSH, False)


def test_a_deleting_row_is_deleted_even_if_its_user_still_qualifies(user):
    row = synced_row(user, state=Customer.State.DELETING)
    decision = sync.decide(row, user, ENV)
    assert (decision.step, decision.row) == (Step.DELETE, row)


def test_a_deleting_row_whose_user_is_gone_is_deleted(user):
    row = synced_row(user, object_id=None, state=Customer.State.DELETING)
    assert sync.decide(row, None, ENV).step == Step.DELETE


def test_a_row_whose_user_is_gone_and_kept_is_skipped(user):
    row = synced_row(user, object_id=None)
    decision = sync.decide(row, None, ENV)
    assert (decision.step, decision.payload) == (Step.SKIPPED, None)


def test_a_user_who_stops_qualifying_is_retired(user, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_staff)
    decision = sync.decide(synced_row(user), user, ENV)
    assert (decision.step, decision.payload) == (Step.RETIRE, None)


def test_with_the_keep_policy_a_user_who_stops_qualifying_is_kept(user, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_staff, DELETE_POLICY="keep")
    assert sync.decide(synced_row(user), user, ENV).step == Step.KEPT


def test_a_user_who_never_qualified_is_skipped(user, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_staff)
    assert sync.decide(None, user, ENV).step == Step.SKIPPED


def test_a_mapping_autumn_would_refuse_is_invalid_with_the_reason(user, autumn_settings):
    autumn_settings(CUSTOMER_ID=lambda u: u.email)
    decision = sync.decide(None, user, ENV)
    assert (decision.step, decision.payload) == (Step.INVALID, None)
    assert isinstance(decision.error, MappingError) and "AUTUMN['CUSTOMER_ID']" in str(decision.error)


def test_force_does_not_push_for_a_user_who_stops_qualifying(user, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_staff)
    assert sync.decide(synced_row(user), user, ENV, force=True).step == Step.RETIRE


def test_the_idle_steps_end_as_the_action_of_the_same_name():
    assert [sync.Action(step.value) for step in sync.IDLE_STEPS] == [
        sync.Action.UNCHANGED,
        sync.Action.SKIPPED,
        sync.Action.KEPT,
    ]


# --- differences: what an update must send ----------------------------------------------


def test_fields_autumn_already_holds_are_not_sent():
    desired = {"name": "Jane", "email": "jane@example.com"}
    assert sync.differences(desired, {"id": "7", **desired}) == {}


def test_a_changed_field_is_sent_with_its_new_value():
    remote = {"name": "Jane", "email": "old@example.com"}
    assert sync.differences({"name": "Jane", "email": "new@example.com"}, remote) == {
        "email": "new@example.com"
    }


def test_a_field_autumn_lacks_is_sent():
    assert sync.differences({"fingerprint": "fp-1"}, {"name": "Jane"}) == {"fingerprint": "fp-1"}


def test_null_and_a_field_autumn_lacks_are_the_same():
    assert sync.differences({"fingerprint": None}, {"name": "Jane"}) == {}


def test_clearing_a_field_autumn_holds_sends_null():
    assert sync.differences({"name": None}, {"name": "Jane"}) == {"name": None}


def test_only_the_metadata_keys_that_differ_are_sent():
    desired = {"metadata": {"plan": "pro", "seats": 3}}
    assert sync.differences(desired, {"metadata": {"plan": "pro", "seats": 2}}) == {"metadata": {"seats": 3}}


def test_metadata_keys_set_elsewhere_are_left_alone():
    desired = {"metadata": {"django_user_id": 7}}
    remote = {"metadata": {"django_user_id": 7, "set_in_dashboard": True}}
    assert sync.differences(desired, remote) == {}


def test_a_null_metadata_value_is_sent_only_to_drop_a_key_autumn_has():
    desired = {"metadata": {"gone": None}}
    assert sync.differences(desired, {"metadata": {"gone": 1}}) == {"metadata": {"gone": None}}
    assert sync.differences(desired, {"metadata": {"other": 1}}) == {}


def test_metadata_autumn_holds_as_null_counts_as_empty():
    assert sync.differences({"metadata": {"a": 1}}, {"metadata": None}) == {"metadata": {"a": 1}}


def test_no_desired_metadata_sends_no_metadata():
    assert sync.differences({"metadata": None}, {"metadata": {"a": 1}}) == {}


# --- retry_delay: when a failed sync is tried again ------------------------------------


@pytest.fixture
def no_jitter(monkeypatch):
    """random.uniform answers 1: the delay is the backoff itself."""
    monkeypatch.setattr(sync.random, "uniform", lambda low, high: 1.0)


def test_the_first_retry_waits_retry_delay(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10)
    assert sync.retry_delay(1) == datetime.timedelta(seconds=10)


def test_each_further_attempt_waits_twice_as_long(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10, RETRY_MAX_DELAY=10_000)
    assert [sync.retry_delay(attempt).total_seconds() for attempt in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_the_wait_stops_growing_at_retry_max_delay(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10, RETRY_MAX_DELAY=60)
    assert sync.retry_delay(4).total_seconds() == 60
    assert sync.retry_delay(50).total_seconds() == 60


@pytest.mark.parametrize(("draw", "seconds"), [(0.8, 8), (1.2, 12)])
def test_the_wait_is_jittered_by_up_to_20_percent_either_way(autumn_settings, monkeypatch, draw, seconds):
    asked = []
    monkeypatch.setattr(sync.random, "uniform", lambda low, high: asked.append((low, high)) or draw)
    autumn_settings(RETRY_DELAY=10)
    assert sync.retry_delay(1).total_seconds() == pytest.approx(seconds)
    assert asked == [(0.8, 1.2)]


def test_the_jitter_spreads_retries_at_the_ceiling_too(autumn_settings, monkeypatch):
    monkeypatch.setattr(sync.random, "uniform", lambda low, high: 1.2)
    autumn_settings(RETRY_DELAY=10, RETRY_MAX_DELAY=60)
    assert sync.retry_delay(10).total_seconds() == pytest.approx(72)


def test_without_a_patched_random_the_wait_stays_within_the_jitter(autumn_settings):
    autumn_settings(RETRY_DELAY=10)
    for _ in range(50):
        assert 8 <= sync.retry_delay(1).total_seconds() <= 12


def test_autumns_retry_after_is_waited_when_longer_than_the_backoff(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10)
    error = RateLimited(429, "rate_limit_exceeded", "slow down", retry_after=45)
    assert sync.retry_delay(1, error).total_seconds() == 45


def test_autumns_retry_after_wins_over_the_ceiling(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10, RETRY_MAX_DELAY=60)
    error = ServiceUnavailable(503, "service_unavailable", "later", retry_after=120)
    assert sync.retry_delay(1, error).total_seconds() == 120


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10)
    error = RateLimited(429, "rate_limit_exceeded", "slow down", retry_after=2)
    assert sync.retry_delay(3, error).total_seconds() == 40


def test_an_error_without_retry_after_gets_the_backoff(autumn_settings, no_jitter):
    autumn_settings(RETRY_DELAY=10)
    error = ServerError(500, "internal_error", "oops")
    assert sync.retry_delay(2, error).total_seconds() == 20
