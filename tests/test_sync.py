"""The sync engine end to end: a user's save or delete, the mirror row, the
task (ImmediateBackend, so it runs at commit) and the emulator.

The tests run in the test case's transaction; ``commit()`` (pytest-django's
``django_capture_on_commit_callbacks(execute=True)``) runs the on-commit
callbacks of its block at its end, as a commit would. Only the tests about
real transactions use ``transaction=True``."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from autumn_django import sync
from autumn_django.exceptions import SyncFailed
from autumn_django.models import Customer
from autumn_django.signals import customer_sync_failed, customer_synced, disable_sync

pytestmark = pytest.mark.django_db


def routes(emulator):
    return [entry.route for entry in emulator.requests()]


# --- create, change, no-op, delete ---------------------------------------------


@pytest.mark.filterwarnings("error:DateTimeField .* received a naive datetime:RuntimeWarning")
def test_a_new_user_becomes_an_autumn_customer(autumn_emulator, make_user, commit):
    with commit():
        user = make_user(first_name="Jane", last_name="Doe")
    remote = autumn_emulator.customer(str(user.pk))
    assert (remote["name"], remote["email"]) == ("Jane Doe", "jane@example.com")
    assert remote["metadata"] == {"django_user_id": user.pk}
    row = Customer.objects.of(user).get()
    assert (row.state, row.customer_id, row.env, row.email) == (
        "synced",
        str(user.pk),
        "sandbox",
        "jane@example.com",
    )
    assert row.data["id"] == str(user.pk) and row.payload_hash
    assert row.remote_created_at.tzinfo is not None
    # The instant Autumn gives (ms since the epoch, UTC), not a naive local time.
    assert row.remote_created_at == datetime.datetime.fromtimestamp(
        remote["created_at"] / 1000, tz=datetime.timezone.utc
    )
    assert routes(autumn_emulator) == ["customers.get_or_create"]


def test_a_user_without_a_full_name_is_named_by_username(autumn_emulator, make_user, commit):
    with commit():
        user = make_user("plainjane")
    assert autumn_emulator.customer(str(user.pk))["name"] == "plainjane"


def test_a_changed_email_is_sent_as_an_update_of_that_field_only(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    user.email = "new@example.com"
    with commit():
        user.save()
    assert routes(autumn_emulator) == ["customers.get_or_create", "customers.update"]
    assert autumn_emulator.requests()[-1].body == {"customer_id": str(user.pk), "email": "new@example.com"}
    assert Customer.objects.of(user).get().email == "new@example.com"


def test_an_unchanged_save_costs_no_request_and_one_query(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    before = len(autumn_emulator.requests())
    user.last_login = timezone.now()
    with commit() as enqueued, CaptureQueriesContext(connection) as queries:
        user.save(update_fields=["last_login"])
    assert enqueued == []  # no task either
    ours = [q["sql"] for q in queries.captured_queries if "autumn_django" in q["sql"]]
    assert len(ours) == 1 and ours[0].startswith("SELECT")
    assert len(queries.captured_queries) == 2  # the user's UPDATE and our SELECT
    assert len(autumn_emulator.requests()) == before


def test_a_users_save_costs_no_more_queries_in_the_sites_transaction_with_customer_sources(
    autumn_emulator, django_user_model, django_capture_on_commit_callbacks
):
    """Created: the user's INSERT and the row's (no lookup for a new object);
    changed: the user's UPDATE, the row's SELECT and UPDATE; unchanged: the
    user's UPDATE and the row's SELECT. The task then reads the row and the
    user apart (a generic link has no join) and writes the result. (A
    running site has its content types cached; savepoints are the test's
    transaction's.)"""
    ContentType.objects.get_for_model(django_user_model)
    cost = []

    def count(queries):
        return sum(not query["sql"].startswith(("SAVEPOINT", "RELEASE")) for query in queries)

    def save(action):
        with django_capture_on_commit_callbacks() as callbacks:
            with CaptureQueriesContext(connection) as in_transaction:
                result = action()
        with CaptureQueriesContext(connection) as in_task:
            for callback in callbacks:
                callback()
        cost.append((count(in_transaction), count(in_task)))
        return result

    user = save(lambda: django_user_model.objects.create_user("jane", "jane@example.com", "x"))
    user.email = "jane2@example.com"
    save(user.save)
    user.last_login = timezone.now()
    save(lambda: user.save(update_fields=["last_login"]))
    assert cost == [(2, 3), (3, 3), (2, 0)]
    assert [entry.route for entry in autumn_emulator.requests()] == [
        "customers.get_or_create",
        "customers.update",
    ]


def test_a_deleted_user_is_deleted_in_autumn_and_the_row_removed(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    customer_id = str(user.pk)
    with commit():
        user.delete()
    assert autumn_emulator.customer(customer_id) is None
    assert routes(autumn_emulator)[-1] == "customers.delete"
    assert Customer.objects.count() == 0


def test_a_delete_that_autumn_already_did_counts_as_done(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    autumn_emulator.reset()  # removed at Autumn behind our back
    with commit():
        user.delete()
    assert [e.status for e in autumn_emulator.requests("customers.delete")] == [404]
    assert Customer.objects.count() == 0


@pytest.mark.django_db(transaction=True)  # a real rollback
def test_a_rolled_back_transaction_makes_no_request_and_leaves_no_row(autumn_emulator, make_user):
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert autumn_emulator.requests() == [] and Customer.objects.count() == 0


@pytest.mark.django_db(transaction=True)  # a real commit
def test_the_request_waits_for_commit(autumn_emulator, make_user):
    with transaction.atomic():
        user = make_user()
        assert autumn_emulator.requests() == []
        assert Customer.objects.of(user).get().state == "pending"
    assert Customer.objects.of(user).get().state == "synced"


def test_disable_sync_ignores_saves_and_deletes(autumn_emulator, make_user, commit):
    with commit() as enqueued, disable_sync():
        user = make_user()
        user.delete()
    assert autumn_emulator.requests() == [] and Customer.objects.count() == 0
    assert enqueued == []


# --- what Autumn already holds -------------------------------------------------


def test_an_existing_remote_customer_with_a_stale_name_is_corrected(
    autumn_emulator, make_user, commit, autumn_settings
):
    autumn_settings(CUSTOMER_ID=lambda u: f"user-{u.username}")
    autumn_emulator.add_customer(
        id="user-jane", name="Old Name", email="old@example.com", metadata={"plan": "x"}
    )
    with commit():
        user = make_user(first_name="New", last_name="Name")
    remote = autumn_emulator.customer("user-jane")
    assert (remote["name"], remote["email"]) == ("New Name", "jane@example.com")
    assert remote["metadata"] == {"plan": "x", "django_user_id": user.pk}  # others' keys kept
    assert routes(autumn_emulator) == ["customers.get_or_create", "customers.update"]


def test_a_customer_deleted_at_autumn_is_recreated_on_the_next_change(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    autumn_emulator.reset()
    user.email = "back@example.com"
    with commit():
        user.save()
    assert [(e.route, e.status) for e in autumn_emulator.requests()] == [
        ("customers.update", 404),
        ("customers.get_or_create", 200),
    ]
    assert autumn_emulator.customer(str(user.pk))["email"] == "back@example.com"


# --- the mapping settings --------------------------------------------------------


def test_a_changed_customer_id_renames_the_customer(autumn_emulator, make_user, commit, autumn_settings):
    with commit():
        user = make_user()
    autumn_settings(CUSTOMER_ID=lambda u: f"user-{u.pk}")
    with commit():
        user.save()
    assert autumn_emulator.requests()[-1].body["new_customer_id"] == f"user-{user.pk}"
    assert autumn_emulator.customer(str(user.pk)) is None
    assert autumn_emulator.customer(f"user-{user.pk}")["email"] == "jane@example.com"
    assert Customer.objects.of(user).get().customer_id == f"user-{user.pk}"


def test_a_rename_onto_a_taken_id_fails_with_a_clear_message(
    autumn_emulator, make_user, commit, autumn_settings
):
    with commit():
        user = make_user()
    autumn_emulator.add_customer(id="taken")
    autumn_settings(CUSTOMER_ID=lambda u: "taken")
    with commit():
        user.save()
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and row.next_attempt_at is None
    assert "Cannot rename Autumn customer" in row.last_error and "'taken'" in row.last_error
    assert "customer_already_exists" in row.last_error


def test_a_customer_id_autumn_would_refuse_is_a_failed_row_and_never_sent(
    autumn_emulator, make_user, commit, autumn_settings
):
    autumn_settings(CUSTOMER_ID=lambda u: u.email)
    with commit():
        user = make_user()
    row = Customer.objects.of(user).get()
    assert row.state == "failed"
    assert "AUTUMN['CUSTOMER_ID']" in row.last_error and "cannot contain @" in row.last_error
    assert autumn_emulator.requests() == []


def test_customer_data_can_be_a_dotted_path(autumn_emulator, make_user, commit, autumn_settings):
    autumn_settings(CUSTOMER_DATA="tests.mapping_functions.customer_data")
    with commit():
        user = make_user()
    remote = autumn_emulator.customer(str(user.pk))
    assert (remote["name"], remote["fingerprint"], remote["metadata"]) == (
        "JANE",
        "fp-jane",
        {"tier": "gold"},
    )


def test_get_or_create_options_come_from_settings(autumn_emulator, make_user, commit, autumn_settings):
    autumn_emulator.add_plan("free")
    autumn_settings(AUTO_ENABLE_PLAN_ID="free", SEND_EMAIL_RECEIPTS=True)
    with commit():
        user = make_user()
    body = autumn_emulator.requests("customers.get_or_create")[0].body
    assert (body["auto_enable_plan_id"], body["send_email_receipts"]) == ("free", True)
    assert "create_in_stripe" not in body
    assert autumn_emulator.customer(str(user.pk))["subscriptions"][0]["plan_id"] == "free"


def test_a_user_who_stops_qualifying_is_deleted_and_comes_back_when_he_qualifies(
    autumn_emulator, make_user, commit, autumn_settings
):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_active)
    with commit():
        user = make_user()
    user.is_active = False
    with commit():
        user.save()
    assert autumn_emulator.customer(str(user.pk)) is None
    assert not Customer.objects.of(user).exists()
    user.is_active = True
    with commit():
        user.save()
    assert autumn_emulator.customer(str(user.pk))["email"] == "jane@example.com"


def test_with_the_keep_policy_customers_stay_in_autumn(autumn_emulator, make_user, commit, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_active, DELETE_POLICY="keep")
    with commit():
        user = make_user()
    user.is_active = False
    with commit():
        user.save()
    customer_id = str(user.pk)
    with commit():
        user.delete()
    assert autumn_emulator.customer(customer_id) is not None
    assert routes(autumn_emulator) == ["customers.get_or_create"]
    assert Customer.objects.get(customer_id=customer_id).user is None


def test_users_who_never_qualify_cost_no_request(autumn_emulator, make_user, commit, autumn_settings):
    autumn_settings(SHOULD_SYNC=lambda u: u.is_staff)
    with commit():
        make_user()
    assert autumn_emulator.requests() == [] and Customer.objects.count() == 0


# --- failures ----------------------------------------------------------------------


def test_autumn_down_at_sign_up_leaves_a_failed_row_then_recovers(autumn_emulator, make_user, commit):
    autumn_emulator.fail_next(50, status=503)
    with commit():
        user = make_user()  # does not raise
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and row.attempts == 1
    assert "503 service_unavailable" in row.last_error
    assert row.next_attempt_at > timezone.now()
    autumn_emulator.reset()
    result = sync.sync(row.pk)
    assert result.action == "created"
    row.refresh_from_db()
    assert (row.state, row.last_error, row.attempts, row.next_attempt_at) == ("synced", "", 0, None)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (429, True), (500, True), (502, True), (503, True)],
)
def test_every_failure_class_is_recorded_retryable_or_not(
    autumn_emulator, make_user, commit, status, retryable
):
    autumn_emulator.fail_next(50, status=status)
    with commit():
        user = make_user()
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and f"HTTP {status}" in row.last_error
    assert (row.next_attempt_at is not None) is retryable


def test_a_dropped_connection_is_a_retryable_failure(autumn_emulator, make_user, commit):
    autumn_emulator.fail_next(50, drop=True)
    with commit():
        user = make_user()
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and "no answer" in row.last_error and row.next_attempt_at


def test_a_failed_delete_stays_deleting_with_its_error(autumn_emulator, make_user, commit):
    with commit():
        user = make_user()
    autumn_emulator.fail_next(50, "customers.delete", status=503)
    with commit():
        user.delete()
    row = Customer.objects.get()
    assert (row.state, row.user) == ("deleting", None)
    assert "503" in row.last_error and row.next_attempt_at
    autumn_emulator.reset()
    assert sync.sync(row.pk).action == "deleted"
    assert Customer.objects.count() == 0


def test_retries_back_off_exponentially_up_to_the_ceiling(autumn_settings):
    autumn_settings(RETRY_DELAY=10, RETRY_MAX_DELAY=60)
    delays = [sync.retry_delay(attempt).total_seconds() for attempt in (1, 2, 3, 4, 10)]
    assert 8 <= delays[0] <= 12 and 16 <= delays[1] <= 24 and 32 <= delays[2] <= 48
    assert 48 <= delays[3] <= 72 and delays[4] <= 72


def test_raise_errors_makes_the_save_raise(autumn_emulator, make_user, commit, autumn_settings):
    autumn_settings(RAISE_ERRORS=True)
    autumn_emulator.fail_next(50, status=400, code="invalid_inputs", message="email: nope")
    with pytest.raises(SyncFailed, match="email: nope"), commit():
        make_user()
    assert Customer.objects.get().state == "failed"  # recorded all the same


def test_engine_signals_tell_the_site(autumn_emulator, make_user, commit):
    seen = []
    customer_synced.connect(
        lambda sender, customer, action, **kw: seen.append(action), weak=False, dispatch_uid="t1"
    )
    customer_sync_failed.connect(
        lambda sender, customer, error, **kw: seen.append(type(error).__name__), weak=False, dispatch_uid="t2"
    )
    try:
        with commit():
            user = make_user()
        autumn_emulator.fail_next(50, status=500)
        user.email = "x@example.com"
        with commit():
            user.save()
        autumn_emulator.reset()
        with commit():
            user.delete()
    finally:
        customer_synced.disconnect(dispatch_uid="t1")
        customer_sync_failed.disconnect(dispatch_uid="t2")
    assert seen == ["created", "ServerError", "deleted"]


# --- concurrency ---------------------------------------------------------------------


def test_a_change_made_while_a_push_is_in_flight_is_pushed_too(
    autumn_emulator, make_user, commit, monkeypatch
):
    """The later change wins even when it lands while an older push runs."""
    with commit():
        user = make_user()
    with disable_sync():  # a change whose own task has not run yet
        user.email = "second@example.com"
        user.save()
    row = Customer.objects.of(user).get()
    Customer.objects.filter(pk=row.pk).update(state="pending")
    from autumn_django.client import AutumnClient

    original = AutumnClient.update_customer
    raced = []

    def update_then_user_changes(self, customer_id, **fields):
        answer = original(self, customer_id, **fields)
        if not raced:  # another save lands after this push read the user
            raced.append(True)
            user.email = "third@example.com"
            with disable_sync():
                user.save()
            sync.mark_changed(user)
        return answer

    monkeypatch.setattr(AutumnClient, "update_customer", update_then_user_changes)
    result = sync.sync(row.pk)
    assert autumn_emulator.customer(str(user.pk))["email"] == "third@example.com"
    assert result.calls == ["customers.update", "customers.update"]
    row.refresh_from_db()
    assert (row.state, row.email) == ("synced", "third@example.com")


def test_sync_of_a_row_that_is_gone_is_skipped(autumn_emulator):
    assert sync.sync(123456).action == "skipped"


@pytest.mark.filterwarnings("error:DateTimeField .* received a naive datetime:RuntimeWarning")
def test_a_retryable_failure_is_due_again_after_the_backoff_delay(
    autumn_emulator, make_user, commit, autumn_settings
):
    """next_attempt_at is the instant now + RETRY_DELAY (jitter of 20% either
    way), not a naive local time read in another zone."""
    autumn_settings(RETRY_DELAY=600)
    autumn_emulator.fail_next(50, status=503)
    started = timezone.now()
    with commit():
        user = make_user()
    finished = timezone.now()
    row = Customer.objects.of(user).get()
    assert isinstance(row.next_attempt_at, datetime.datetime) and row.next_attempt_at.tzinfo
    earliest = started + datetime.timedelta(seconds=600 * 0.8)
    latest = finished + datetime.timedelta(seconds=600 * 1.2)
    assert earliest <= row.next_attempt_at <= latest


def test_tasks_go_to_the_configured_backend_and_queue(
    autumn_emulator, make_user, commit, settings, autumn_settings
):
    from django_tasks.signals import task_enqueued

    settings.TASKS = {
        "default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"},
        "billing": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["autumn"]},
    }
    autumn_settings(TASK_BACKEND="billing", TASK_QUEUE="autumn")
    seen = []
    task_enqueued.connect(
        lambda sender, task_result, **kw: seen.append(task_result), weak=False, dispatch_uid="t3"
    )
    try:
        with commit():
            user = make_user()
    finally:
        task_enqueued.disconnect(dispatch_uid="t3")
    [result] = seen
    row = Customer.objects.of(user).get()
    assert (result.backend, result.task.queue_name, result.args) == ("billing", "autumn", [row.pk])
    assert row.state == "synced"
