"""A delete wins over every push that started before it, however late that
push lands. Each race is played out in a fixed order by holding one request
at the emulator (``hold_next``) until the test releases it, so none depends
on the machine's speed. Also run on PostgreSQL (test_services.py)."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from autumn_django import sync, tasks
from autumn_django.models import Customer
from autumn_django.signals import disable_sync
from autumn_django.sync import Action

# Two threads work on the database at once, as two workers would.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_row_lock(monkeypatch):
    """On PostgreSQL one sync of a row runs at a time (an advisory lock),
    which would keep these races from happening at all; correctness must
    not depend on it, so here two syncs of one row do overlap."""
    monkeypatch.setattr(sync, "_one_at_a_time", lambda pk: contextlib.nullcontext())


class Worker(threading.Thread):
    """``sync.sync(pk)`` in a thread of its own: one worker's task."""

    def __init__(self, pk: int) -> None:
        super().__init__(daemon=True)
        self.pk, self.result, self.error = pk, None, None

    def run(self) -> None:
        try:
            self.result = sync.sync(self.pk)
        except BaseException as error:  # surfaced by finish()
            self.error = error
        finally:
            from django.db import connection

            connection.close()

    def finish(self) -> sync.SyncResult:
        self.join(10)
        assert not self.is_alive(), "the worker did not finish"
        if self.error:
            raise self.error
        return self.result


@pytest.fixture
def user(autumn_emulator, django_user_model):
    """A user whose customer exists at Autumn and whose row is synced."""
    with disable_sync():
        user = django_user_model.objects.create_user("jane", "jane@example.com", "x")
    row = sync.mark_changed(user)
    assert sync.sync(row.pk).action == Action.CREATED
    return user


def change(user, **fields):
    """The user's change as the signal records it: the row goes pending."""
    for name, value in fields.items():
        setattr(user, name, value)
    with disable_sync():
        user.save()
    return sync.mark_changed(user)


def delete(user):
    """The user's delete as the signal records it: the row goes deleting."""
    row = sync.mark_deleted(user)
    with disable_sync():
        user.delete()
    return row


def age(row, by=sync.PUSH_GRACE + timedelta(seconds=1)):
    """Move the row's times back, as if ``by`` had passed."""
    row.refresh_from_db()
    Customer.objects.filter(pk=row.pk).update(
        pushed_at=row.pushed_at and row.pushed_at - by,
        next_attempt_at=row.next_attempt_at and row.next_attempt_at - by,
        updated=timezone.now() - by,
    )


def test_an_update_overtaken_by_the_delete_removes_the_customer_it_re_creates(autumn_emulator, user):
    """Case 1: an update is on the wire when the user is deleted; the delete
    lands first, the update's 404 leads it to get_or_create; the pusher then
    finds its row gone and deletes the customer it made."""
    customer_id = str(user.pk)
    row = change(user, email="new@example.com")
    held = autumn_emulator.hold_next("customers.update")
    pusher = Worker(row.pk)
    pusher.start()
    held.wait()
    delete(user)
    assert sync.sync(row.pk).action == Action.DELETED  # the other worker's delete lands first
    held.release()
    pusher.finish()
    assert autumn_emulator.customer(customer_id) is None
    routes = [entry.route for entry in autumn_emulator.requests()][1:]
    assert routes == [
        "customers.delete",
        "customers.update",  # 404: deleted meanwhile
        "customers.get_or_create",  # made again...
        "customers.delete",  # ...and removed by the pusher itself
    ]


def test_a_first_create_that_lands_after_the_delete_is_removed(autumn_emulator, django_user_model):
    """Case 2: the delete arrives before the first create has landed (404:
    nothing to delete yet); the held get_or_create then creates the
    customer, and its pusher removes it."""
    with disable_sync():
        user = django_user_model.objects.create_user("jane", "jane@example.com", "x")
    customer_id = str(user.pk)
    row = sync.mark_changed(user)
    held = autumn_emulator.hold_next("customers.get_or_create")
    pusher = Worker(row.pk)
    pusher.start()
    held.wait()
    delete(user)
    assert sync.sync(row.pk).action == Action.DELETED  # 404: counts as done
    held.release()
    pusher.finish()
    assert autumn_emulator.customer(customer_id) is None
    assert Customer.objects.get(pk=row.pk).state == Customer.State.GONE


def test_a_push_from_a_killed_worker_landing_late_is_deleted_by_the_tombstone(autumn_emulator, user):
    """Case 3: a worker is killed with its push on the wire; nobody is left
    to notice it land after the delete. The delete keeps the row as a
    tombstone while such a push may land, then deletes once more."""
    customer_id = str(user.pk)
    row = change(user, first_name="Late")
    Customer.objects.filter(pk=row.pk).update(pushed_at=timezone.now())  # the push that started
    delete(user)
    result = sync.sync(row.pk)
    assert result.action == Action.DELETED and autumn_emulator.customer(customer_id) is None
    assert result.retry_at is not None  # the task enqueues the confirmation for then
    row.refresh_from_db()
    assert (row.state, row.next_attempt_at) == (Customer.State.GONE, result.retry_at)
    assert sync.sync(row.pk).action == Action.SKIPPED  # not due yet: nothing sent
    autumn_emulator.add_customer(id=customer_id)  # the killed worker's push lands
    age(row)
    assert list(Customer.objects.outbox().values_list("pk", flat=True)) == [row.pk]
    assert sync.sync(row.pk).action == Action.DELETED
    assert autumn_emulator.customer(customer_id) is None
    assert not Customer.objects.filter(pk=row.pk).exists()


def test_a_user_recreated_with_the_same_id_takes_over_the_deleting_row(
    autumn_emulator, user, django_user_model
):
    """Case 4: a user re-created with the same primary key while the old row
    is still deleting gets that row (no unique-id clash, no misleading
    error), and the delete in flight turns into a push."""
    customer_id, pk = str(user.pk), user.pk
    row = delete(user)
    held = autumn_emulator.hold_next("customers.delete")
    deleter = Worker(row.pk)
    deleter.start()
    held.wait()
    with disable_sync():
        again = django_user_model.objects.create_user("jane2", "jane2@example.com", "x", pk=pk)
    taken = sync.mark_changed(again)
    assert taken is not None and taken.pk == row.pk
    held.release()
    result = deleter.finish()
    assert result.action == Action.CREATED
    row.refresh_from_db()
    assert (row.object_id, row.state, row.email) == (str(pk), Customer.State.SYNCED, "jane2@example.com")
    assert autumn_emulator.customer(customer_id)["email"] == "jane2@example.com"


def test_a_compensating_delete_never_removes_a_customer_a_live_row_holds(autumn_emulator, user):
    """A customer a push made after its row's delete may meanwhile belong to
    a live row (a CUSTOMER_ID built from an email a new user reuses)."""
    calls: list[str] = []
    sync._compensate(sync.get_client(), "sandbox", str(user.pk), calls)  # user's live row holds it
    assert autumn_emulator.customer(str(user.pk)) is not None
    assert calls == []


def test_a_compensating_delete_autumn_refuses_is_left_to_the_outbox(autumn_emulator):
    autumn_emulator.add_customer(id="made-late")
    autumn_emulator.fail_next(4, "customers.delete", status=503)
    sync._compensate(sync.get_client(), "sandbox", "made-late", [])
    row = Customer.objects.get(customer_id="made-late")
    assert row.state == Customer.State.GONE and row.user is None and "503" in row.last_error
    age(row)
    assert sync.sync(row.pk).action == Action.DELETED
    assert autumn_emulator.customer("made-late") is None
    assert not Customer.objects.filter(pk=row.pk).exists()


def test_autumn_sync_removes_a_customer_its_push_made_for_a_row_deleted_meanwhile(autumn_emulator, user):
    """The bulk engine's pushes are overtaken the same way."""
    from django.core.management import call_command

    customer_id = str(user.pk)
    change(user, email="bulk@example.com")
    held = autumn_emulator.hold_next("customers.update")

    def run_command() -> None:
        from django.db import connection

        try:
            call_command("autumn_sync", "--retry", stdout=io.StringIO())
        finally:
            connection.close()

    runner = threading.Thread(target=run_command)
    runner.start()
    held.wait()
    row = delete(user)
    assert sync.sync(row.pk).action == Action.DELETED
    held.release()
    runner.join(10)
    assert autumn_emulator.customer(customer_id) is None


def test_a_row_whose_task_died_is_enqueued_again_by_the_next_task(autumn_emulator, django_user_model):
    """django-tasks-db does not re-run a task whose worker was killed; the
    next sync task on any worker picks its row up once it is stale."""
    with disable_sync():
        lost = django_user_model.objects.create_user("lost", "lost@example.com", "x")
    row = sync.mark_changed(lost)  # its task died: nothing ran
    age(row, by=tasks.STALE_AFTER + timedelta(seconds=1))
    assert tasks.recover_stale(force=True) == 1  # ImmediateBackend: the sync runs now
    assert Customer.objects.get(pk=row.pk).state == Customer.State.SYNCED
    assert autumn_emulator.customer(str(lost.pk)) is not None


def test_a_row_changed_recently_is_not_taken_for_lost(autumn_emulator, django_user_model):
    with disable_sync():
        fresh = django_user_model.objects.create_user("fresh", "fresh@example.com", "x")
    sync.mark_changed(fresh)
    assert tasks.recover_stale(force=True) == 0


def test_on_postgresql_two_syncs_of_one_row_run_one_after_the_other(autumn_emulator, user, monkeypatch):
    """Where the database allows it, a second sync of a row waits for the
    first, so their pushes never race: one update, not two."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; elsewhere the version checks alone keep it right")
    monkeypatch.undo()  # the real lock
    row = change(user, email="one@example.com")
    held = autumn_emulator.hold_next("customers.update")
    first = Worker(row.pk)
    first.start()
    held.wait()
    second = Worker(row.pk)
    second.start()
    time.sleep(0.3)  # the second sync is now waiting for the row, not pushing
    held.release()
    assert first.finish().action == Action.UPDATED
    assert second.finish().action == Action.UNCHANGED
    assert len(autumn_emulator.requests("customers.update")) == 1


def test_the_delete_of_a_confirmed_row_checks_its_version_in_the_same_statement(autumn_emulator, user):
    """A user taking the row over between a read and a delete by pk would
    lose it: the DELETE itself says which version it removes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    row = delete(user)
    with CaptureQueriesContext(connection) as queries:
        result = sync.sync(row.pk)
    assert result.action == Action.DELETED
    deletes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('DELETE FROM "autumn_django_customer"')
    ]
    assert len(deletes) == 1 and '"version"' in deletes[0]
