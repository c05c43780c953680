"""manage.py autumn_sync: every mode and flag, against the emulator."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from autumn_django import sync
from autumn_django.management.commands.autumn_sync import Progress
from autumn_django.models import Customer
from autumn_django.signals import disable_sync

pytestmark = pytest.mark.django_db


def existing_users(count, start=0):
    """Users made before autumn-django was installed (no signal, no row)."""
    User = get_user_model()
    with disable_sync():
        User.objects.bulk_create(
            [
                User(username=f"u{n}", email=f"u{n}@example.com", first_name=f"U{n}")
                for n in range(start, start + count)
            ]
        )
    return list(User.objects.order_by("pk"))


def run(*args, **options):
    out = io.StringIO()
    options.setdefault("stdout", out)
    options.setdefault("stderr", io.StringIO())
    call_command("autumn_sync", *args, **options)
    return out.getvalue()


def writes(emulator):
    return [e for e in emulator.requests() if e.route not in ("customers.list", "customers.get")]


# --- push ------------------------------------------------------------------------


def test_push_mirrors_every_existing_user(autumn_emulator):
    users = existing_users(30)
    output = run("--batch-size", "7")
    assert len(autumn_emulator.customers()) == 30
    assert {c["email"] for c in autumn_emulator.customers()} == {u.email for u in users}
    assert Customer.objects.filter(state="synced").count() == 30
    assert "created 30" in output and "customers.get_or_create 30" in output


def test_a_second_run_makes_no_write_call(autumn_emulator):
    existing_users(20)
    run()
    before = len(autumn_emulator.requests())
    output = run()
    assert len(autumn_emulator.requests()) == before
    assert "unchanged 20" in output and "API calls: none" in output


def count_queries(*args):
    with CaptureQueriesContext(connection) as queries:
        run(*args)
    return len(queries.captured_queries)


def test_queries_grow_with_the_number_of_batches_not_of_users(autumn_emulator):
    existing_users(40)
    one_batch = count_queries("--batch-size", "40")
    Customer.objects.all().delete()
    autumn_emulator.reset()
    existing_users(200, start=40)
    six_batches = count_queries("--batch-size", "40")  # 240 users
    per_batch = (six_batches - one_batch) / 5
    assert per_batch <= 12  # read users, read rows, create rows, lock, write: with BEGIN/COMMIT
    assert six_batches < 240 / 3


def test_a_change_signals_missed_is_pushed_as_an_update(autumn_emulator):
    users = existing_users(5)
    run()
    get_user_model().objects.filter(pk=users[2].pk).update(email="changed@example.com")  # no signal
    before = len(autumn_emulator.requests())
    output = run()
    new = autumn_emulator.requests()[before:]
    assert [(e.route, e.body) for e in new] == [
        ("customers.update", {"customer_id": str(users[2].pk), "email": "changed@example.com"})
    ]
    assert "updated 1" in output and "unchanged 4" in output


def test_users_who_stop_qualifying_are_deleted_by_push(autumn_emulator, autumn_settings):
    users = existing_users(4)
    run()
    autumn_settings(SHOULD_SYNC=lambda u: u.username != "u1")
    output = run()
    assert autumn_emulator.customer(str(users[1].pk)) is None
    assert not Customer.objects.of(users[1]).exists()
    assert "deleted 1" in output


def left_deleting(emulator, commit):
    """Two users pushed, then one deleted while Autumn refused the delete:
    its row is left ``deleting``. Returns the deleted user's customer id."""
    users = existing_users(2)
    run()
    emulator.fail_next(50, "customers.delete", status=503)
    gone = str(users[0].pk)
    with commit():
        users[0].delete()
    assert Customer.objects.get(object_id__isnull=True).state == "deleting"
    return gone


def test_rows_left_deleting_are_finished_by_push(autumn_emulator, commit):
    gone = left_deleting(autumn_emulator, commit)
    assert [e.status for e in autumn_emulator.requests("customers.delete")] == [503] * 4  # tried, failed
    autumn_emulator.reset()
    autumn_emulator.add_customer(id=gone)
    output = run()
    assert Customer.objects.count() == 1 and autumn_emulator.customer(gone) is None
    assert "deleted 1" in output


def test_verbosity_2_lists_each_change(autumn_emulator):
    users = existing_users(2)
    output = run(verbosity=2)
    assert f"created   {users[0].pk} (user {users[0].pk})" in output


def test_json_prints_the_summary(autumn_emulator):
    existing_users(3)
    summary = json.loads(run("--json"))
    assert (summary["mode"], summary["created"], summary["failed"]) == ("push", 3, 0)
    assert summary["api_calls"] == {"customers.get_or_create": 3}


# --- selection -------------------------------------------------------------------------


def test_users_selects_by_primary_key(autumn_emulator):
    users = existing_users(5)
    run("--users", str(users[1].pk), str(users[3].pk))
    assert sorted(c["id"] for c in autumn_emulator.customers()) == sorted(
        [str(users[1].pk), str(users[3].pk)]
    )


def test_limit_takes_the_first_n_users(autumn_emulator):
    users = existing_users(5)
    run("--limit", "2")
    assert sorted(c["id"] for c in autumn_emulator.customers()) == sorted(str(u.pk) for u in users[:2])


def test_since_selects_users_who_joined_or_logged_in_since(autumn_emulator):
    users = existing_users(3)
    old = timezone.now() - timezone.timedelta(days=30)
    get_user_model().objects.update(date_joined=old)
    get_user_model().objects.filter(pk=users[0].pk).update(last_login=timezone.now())
    run("--since", (timezone.now() - timezone.timedelta(days=1)).date().isoformat())
    assert [c["id"] for c in autumn_emulator.customers()] == [str(users[0].pk)]


def test_a_bad_since_is_a_clear_error(autumn_emulator):
    with pytest.raises(CommandError, match="--since 'yesterday' is not an ISO 8601"):
        run("--since", "yesterday")


# --- dry run -------------------------------------------------------------------------------


def test_dry_run_makes_no_write_and_changes_no_row(autumn_emulator):
    users = existing_users(3)
    run("--users", str(users[0].pk))
    get_user_model().objects.filter(pk=users[0].pk).update(email="new@example.com")
    before = len(autumn_emulator.requests())
    output = run("--dry-run", verbosity=2)
    assert autumn_emulator.requests()[before:] == []
    assert Customer.objects.count() == 1 and Customer.objects.get().email == users[0].email
    assert f"would get_or_create {users[1].pk}" in output
    assert f"would update {users[0].pk} (user {users[0].pk}): email" in output
    assert "Dry run:" in output and "would create 2, would update 1" in output


# --- failures and resumption ----------------------------------------------------------------


def test_failures_are_listed_and_make_the_exit_status_non_zero(autumn_emulator, settings):
    users = existing_users(3)
    autumn_emulator.fail_next(
        50, status=400, code="invalid_inputs", message="email: not a valid email address"
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="3 failed"):
        run(stdout=out)
    text = out.getvalue()
    assert (
        f"user {users[0].pk}, customer {users[0].pk}: customers.get_or_create: HTTP 400 invalid_inputs"
        in text
    )
    assert settings.AUTUMN["SECRET_KEY"] not in text
    assert Customer.objects.filter(state="failed").count() == 3


def test_no_fail_on_error_exits_zero(autumn_emulator):
    existing_users(2)
    autumn_emulator.fail_next(50, status=400)
    assert "failed 2" in run("--no-fail-on-error")


def test_an_interrupted_run_resumes_without_duplicates_or_repeated_work(autumn_emulator, monkeypatch):
    existing_users(40)
    real_execute, calls = sync.execute, []

    def interrupted(step, client, **kwargs):
        calls.append(1)
        if len(calls) == 25:
            raise KeyboardInterrupt
        return real_execute(step, client, **kwargs)

    monkeypatch.setattr(sync, "execute", interrupted)
    with pytest.raises(CommandError) as caught:
        run("--batch-size", "10", "--concurrency", "1")
    assert caught.value.returncode == 130
    synced = Customer.objects.filter(state="synced").count()
    assert synced == 20  # two whole batches were recorded; the third was cut
    assert not Customer.objects.exclude(state__in=["synced", "pending"]).exists()  # all true states
    monkeypatch.setattr(sync, "execute", real_execute)
    before = len(autumn_emulator.requests())
    run("--batch-size", "10")
    assert len(autumn_emulator.requests()) - before == 40 - synced  # no repeated work
    assert len(autumn_emulator.customers()) == 40  # no duplicate
    assert Customer.objects.filter(state="synced").count() == 40


@pytest.mark.parametrize("statuses", [(503,), (429,), (429, 500, 503)])
def test_a_flaky_autumn_converges_to_the_exact_desired_state(autumn_emulator, statuses):
    users = existing_users(60)
    autumn_emulator.fail_rate, autumn_emulator.fail_status = 0.2, statuses
    for _ in range(10):
        # The summary's count, not a progress line's (one comes every 5 s, and
        # a run waiting out Retry-After may print "failed 0" before a failure).
        if json.loads(run("--no-fail-on-error", "--batch-size", "16", "--json"))["failed"] == 0:
            break
    autumn_emulator.fail_rate = 0
    remote = {c["id"]: c for c in autumn_emulator.customers()}
    assert len(remote) == 60 and len(autumn_emulator.customers()) == 60
    for user in users:
        assert (remote[str(user.pk)]["email"], remote[str(user.pk)]["name"]) == (user.email, user.first_name)
    assert Customer.objects.filter(state="synced").count() == 60


def test_client_side_pacing_meets_autumns_real_rate_limits_without_429(autumn_emulator):
    users = existing_users(30)
    run()
    get_user_model().objects.update(email="x@example.com")
    autumn_emulator.rate_limits = True
    before = len(autumn_emulator.requests())
    run("--concurrency", "8")
    updates = autumn_emulator.requests()[before:]
    assert len(updates) == 30 and {e.status for e in updates} == {200}
    assert {c["email"] for c in autumn_emulator.customers()} == {"x@example.com"}
    assert {e.body["customer_id"] for e in updates} == {str(user.pk) for user in users}  # each once


# --- retry ------------------------------------------------------------------------------------


def test_retry_takes_only_the_rows_due(autumn_emulator):
    users = existing_users(4)
    run()
    past, future = (
        timezone.now() - timezone.timedelta(minutes=1),
        timezone.now() + timezone.timedelta(hours=1),
    )
    Customer.objects.of(users[0]).update(state="failed", next_attempt_at=past, payload_hash="")
    Customer.objects.of(users[1]).update(state="failed", next_attempt_at=future, payload_hash="")
    Customer.objects.of(users[2]).update(state="failed", next_attempt_at=None, payload_hash="")
    Customer.objects.of(users[3]).update(state="pending", payload_hash="")
    assert sorted(Customer.objects.outbox().values_list("object_id", flat=True)) == [
        str(users[0].pk),
        str(users[3].pk),
    ]
    output = run("--retry")
    assert "unchanged 2" in output  # Autumn held them already: no call was needed
    states = dict(Customer.objects.values_list("object_id", "state"))
    assert [states[str(u.pk)] for u in users] == ["synced", "failed", "failed", "synced"]


# --- check ---------------------------------------------------------------------------------------


def test_check_reports_nothing_and_exits_zero_when_in_sync(autumn_emulator):
    existing_users(5)
    run()
    before = len(writes(autumn_emulator))
    assert "In sync: 5. Missing in Autumn: 0. Fields differ: 0. Orphans in Autumn: 0." in run("--check")
    assert len(writes(autumn_emulator)) == before  # reads only


def test_check_finds_each_kind_of_drift_and_exits_one(autumn_emulator):
    users = existing_users(4)
    run("--users", str(users[0].pk), str(users[1].pk))
    assert autumn_emulator.customer(str(users[1].pk))["name"] == users[1].first_name  # in sync, until:
    from autumn_django.client import get_client

    get_client().update_customer(str(users[1].pk), name="Renamed in the dashboard")
    autumn_emulator.add_customer(id="stray-42", email="stray@example.com")
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        run("--check", stdout=out)
    assert caught.value.returncode == 1
    text = out.getvalue()
    assert f"missing   user {users[2].pk} -> {users[2].pk}" in text
    assert f"differs   user {users[1].pk} -> {users[1].pk}: name" in text
    assert "orphan    stray-42" in text
    assert "In sync: 1. Missing in Autumn: 2. Fields differ: 1. Orphans in Autumn: 1." in text


def test_check_json(autumn_emulator):
    [user] = existing_users(1)
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        run("--check", "--json", stdout=out)
    assert caught.value.returncode == 1  # drift, as without --json
    report = json.loads(out.getvalue())
    assert len(report["missing"]) == 1 and report["orphans"] == []
    assert report["missing"] == [{"object": f"user {user.pk}", "customer_id": str(user.pk)}]


# --- check --repair ------------------------------------------------------------------------------


def check(*args):
    """``--check`` with ``args``: its output and its exit status."""
    out = io.StringIO()
    try:
        call_command("autumn_sync", "--check", *args, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        return out.getvalue() + str(error), error.returncode
    return out.getvalue(), 0


def test_a_customer_lost_at_autumn_is_reported_and_the_named_repair_restores_it(
    autumn_emulator, autumn_client
):
    [user] = existing_users(1)
    run()
    autumn_client.delete_customer(str(user.pk))  # lost at Autumn; the mirror still says synced
    assert "unchanged 1" in run()  # a plain push trusts the row: this is why a repair exists
    output, status = check()
    assert status == 1 and f"missing   user {user.pk} -> {user.pk}" in output
    assert "manage.py autumn_sync --check --repair creates the 1 missing" in output
    before = len(autumn_emulator.requests())
    output, status = check("--repair")
    assert status == 0 and "created 1" in output
    assert [entry.route for entry in autumn_emulator.requests()[before:]][-1:] == ["customers.get_or_create"]
    assert autumn_emulator.customer(str(user.pk))["email"] == user.email
    assert check() == (
        "In sync: 1. Missing in Autumn: 0. Fields differ: 0. Orphans in Autumn: 0. "
        "Customers without an id: 0. Objects the mapping refuses: 0.\n",
        0,
    )


def test_a_customer_edited_at_autumn_is_updated_back_by_the_repair(autumn_emulator, autumn_client):
    [user] = existing_users(1)
    run()
    autumn_client.update_customer(str(user.pk), name="Edited in the dashboard")
    output, status = check()
    assert status == 1 and f"differs   user {user.pk} -> {user.pk}: name" in output
    before = len(autumn_emulator.requests())
    output, status = check("--repair")
    assert status == 0 and "updated 1" in output
    assert [entry.route for entry in autumn_emulator.requests()[before + 1 :]] == ["customers.update"]
    assert autumn_emulator.customer(str(user.pk))["name"] == "U0"
    assert check()[1] == 0


def test_the_repair_leaves_orphans_to_prune_and_says_so(autumn_emulator, autumn_client):
    [user] = existing_users(1)
    run()
    autumn_client.delete_customer(str(user.pk))
    autumn_emulator.add_customer(id="nobody")
    output, status = check("--repair")
    assert status == 1 and "created 1" in output
    assert "manage.py autumn_sync --prune deletes the 1 orphans" in output
    assert autumn_emulator.customer("nobody") is not None


def test_a_dry_run_repair_changes_nothing(autumn_emulator, autumn_client):
    [user] = existing_users(1)
    run()
    autumn_client.delete_customer(str(user.pk))
    output, status = check("--repair", "--dry-run")
    assert status == 1 and "would get_or_create 1 and update 0" in output
    assert autumn_emulator.customer(str(user.pk)) is None


def test_repair_goes_with_check_only():
    with pytest.raises(CommandError, match="--repair goes with --check"):
        run("--repair")


# --- pull ------------------------------------------------------------------------------------------


def test_pull_links_existing_customers_and_refreshes_remote_fields(autumn_emulator):
    users = existing_users(3)
    for user in users[:2]:
        autumn_emulator.add_customer(
            id=str(user.pk),
            name=user.first_name,
            email=user.email,
            stripe_id="cus_Pulled123",
            metadata={"django_user_id": user.pk},
        )
    output = run("--pull")
    assert "linked 2" in output
    row = Customer.objects.of(users[0]).get()
    assert (row.state, row.stripe_id, row.data["stripe_id"]) == ("synced", "cus_Pulled123", "cus_Pulled123")
    assert row.remote_created_at is not None
    before = len(autumn_emulator.requests())
    run()  # the linked two already hold what their users say; the third is created
    assert [e.route for e in autumn_emulator.requests()[before:]] == ["customers.get_or_create"]


def test_pull_dry_run_changes_no_row(autumn_emulator):
    users = existing_users(1)
    autumn_emulator.add_customer(id=str(users[0].pk))
    assert "linked 1" in run("--pull", "--dry-run")
    assert Customer.objects.count() == 0


# --- prune -----------------------------------------------------------------------------------------


def test_prune_deletes_orphans_after_confirmation(autumn_emulator, monkeypatch):
    users = existing_users(2)
    run()
    autumn_emulator.add_customer(id="stray-1")
    autumn_emulator.add_customer(id="stray-2")
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Nothing deleted"):
        run("--prune")
    assert len(autumn_emulator.customers()) == 4
    assert "would delete 2" in run("--prune", "--dry-run")
    assert len(autumn_emulator.customers()) == 4
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert "deleted 2" in run("--prune")
    assert sorted(c["id"] for c in autumn_emulator.customers()) == sorted(str(u.pk) for u in users)


def test_prune_no_input_does_not_ask(autumn_emulator, monkeypatch):
    existing_users(1)
    run()
    autumn_emulator.add_customer(id="stray")
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked"))
    assert "deleted 1" in run("--prune", "--no-input")


# --- arguments and progress ----------------------------------------------------------------------------


def test_enqueue_cannot_be_a_dry_run(autumn_emulator):
    with pytest.raises(CommandError, match="--enqueue goes with"):
        run("--enqueue", "--dry-run")


def test_a_chunk_task_past_its_time_limit_hands_the_rest_on_as_a_new_task(autumn_emulator, monkeypatch):
    """So that no job timeout (RQ's 180 s) stops a chunk whose workers wait
    their turn for a shared budget: what was done is recorded, the rest
    is enqueued (the immediate backend runs it at once)."""
    from autumn_django import tasks

    users = existing_users(7)
    monkeypatch.setattr(tasks, "CHUNK_STEP", 3)
    monkeypatch.setattr(tasks, "CHUNK_TIME_LIMIT", 0.0)
    handed_on = []
    enqueue = tasks.configured

    class Recording:
        def __init__(self, task):
            self.task = task

        def enqueue(self, model, pks, *rest):
            handed_on.append(len(pks))
            return self.task.enqueue(model, pks, *rest)

    monkeypatch.setattr(tasks, "configured", lambda task_=None, **kw: Recording(enqueue(task_, **kw)))
    result = tasks.sync_objects.call("auth.user", [user.pk for user in users])
    assert (result["created"], result["handed_on"]) == (3, 4)
    assert handed_on == [4, 1]  # 3 done, 4 handed on; of those 3 done, 1 handed on
    creates = autumn_emulator.requests("customers.get_or_create")
    assert len(creates) == 7 and Customer.objects.filter(state="synced").count() == 7


def test_enqueue_with_the_immediate_backend_runs_each_chunk(autumn_emulator):
    existing_users(25)
    assert "Enqueued 3 chunk tasks of up to 10 objects" in run("--enqueue", "--batch-size", "10")
    assert len(autumn_emulator.customers()) == 25


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, log = Terminal(), io.StringIO()
    bar, lines = Progress(terminal, 10), Progress(log, 10, interval=3600)
    for progress in (bar, lines):
        progress.advance(5, 0)
        progress.advance(5, 1)
        progress.finish()
    assert terminal.getvalue().count("\r[") == 2 and "10/10 100%" in terminal.getvalue()
    assert log.getvalue().count("\n") == 1 and "10/10" in log.getvalue() and "failed 1" in log.getvalue()


def test_a_push_that_makes_no_call_is_reported_unchanged_not_updated(autumn_emulator):
    """After "Refresh from Autumn" (the payload hash cleared), a push finds
    Autumn holding every field: no request, and it says so."""
    from autumn_django import sync

    users = existing_users(1)
    run()
    row = Customer.objects.of(users[0]).get()
    sync.refresh(row)
    output = run()
    assert "unchanged 1" in output and "updated 0" in output
    assert "API calls: customers.get 1" not in output and "API calls: none" in output


# --- one push in several processes -----------------------------------------------------------


def test_shards_split_a_push_between_runs_without_overlap(autumn_emulator):
    from autumn_django.bulk import shard_of

    users = existing_users(10)
    first = {str(user.pk) for user in users if shard_of(user.pk, 2) == 1}
    assert 0 < len(first) < 10
    assert f"created {len(first)}" in run("--shard", "1/2", "--batch-size", "2")
    assert {c["id"] for c in autumn_emulator.customers()} == first
    assert f"created {10 - len(first)}" in run("--shard", "2/2", "--batch-size", "2")
    creates = [e for e in autumn_emulator.requests() if e.route == "customers.get_or_create"]
    assert len(creates) == 10 and len(autumn_emulator.customers()) == 10  # each once
    assert Customer.objects.filter(state="synced").count() == 10


def test_an_object_deleted_between_two_shards_moves_no_other_object(autumn_emulator, commit):
    """A shard takes objects by a hash of their keys, not by their place in
    the list: a delete (or a new object) between two machines' runs skips
    or repeats nothing."""
    from autumn_django.bulk import shard_of

    users = existing_users(12)
    every = sorted(str(user.pk) for user in users)
    run("--shard", "1/2", "--batch-size", "2")
    doomed = next(user for user in users if shard_of(user.pk, 2) == 1)
    with disable_sync():
        doomed.delete()
    run("--shard", "2/2", "--batch-size", "2")
    creates = [e.body["customer_id"] for e in autumn_emulator.requests("customers.get_or_create")]
    assert sorted(creates) == every  # each once, none skipped


def test_a_shard_of_a_union_reads_its_objects_by_key(autumn_emulator):
    from autumn_django import bulk
    from autumn_django.client import bulk_client

    users = existing_users(6)
    User = get_user_model()
    union = User.objects.filter(pk__lte=users[2].pk).union(User.objects.filter(pk__gt=users[2].pk))
    summaries = []
    for number in (1, 2):
        runner = bulk.BulkSync(bulk_client(4), batch_size=2, shard=(number, 2))
        summaries.append(runner.push([union.order_by("pk")], include_deleting=False).as_dict()["created"])
    assert sum(summaries) == 6 and len(autumn_emulator.customers()) == 6


def test_only_the_first_shard_deletes_the_customers_of_rows_left_deleting(autumn_emulator, commit):
    gone = left_deleting(autumn_emulator, commit)
    autumn_emulator.reset()
    autumn_emulator.add_customer(id=gone)
    run("--shard", "2/2")
    assert autumn_emulator.customer(gone) is not None
    assert "deleted 1" in run("--shard", "1/2")
    assert autumn_emulator.customer(gone) is None and Customer.objects.count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "3/2"], "is not K/N"),
        (["--shard", "0/2"], "is not K/N"),
        (["--shard", "half"], "is not K/N"),
        (["--processes", "0"], "is not a number of processes"),
        (["--processes", "2", "--retry"], "go with a push"),
        (["--shard", "1/2", "--enqueue"], "go with a push"),
        (["--processes", "2", "--enqueue"], "go with a push"),
        (["--shard", "1/2", "--check"], "go with a push"),
        (["--shard", "1/2", "--limit", "3"], "without --limit"),
        (["--processes", "2", "--users", "1"], "a push of whole sources"),
        (["--processes", "2", "--dry-run"], "a push of whole sources"),
    ],
)
def test_processes_and_shards_refuse_what_they_cannot_do(autumn_emulator, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_auto_runs_a_small_push_in_this_process(autumn_emulator, monkeypatch):
    existing_users(3)
    monkeypatch.setattr("subprocess.Popen", None)  # starting a process would fail
    assert "created 3" in run()


def test_auto_runs_in_one_process_on_sqlite_which_takes_one_writer_at_a_time(autumn_emulator, monkeypatch):
    from autumn_django import bulk

    existing_users(3)
    monkeypatch.setattr(bulk, "processes_for", lambda total: 4)  # as for a push of many
    monkeypatch.setattr("subprocess.Popen", None)
    assert json.loads(run("--json"))["processes"] == 1


def test_a_push_in_processes_reads_them_to_the_end_when_its_own_output_is_closed(
    autumn_emulator, monkeypatch
):
    """`autumn_sync | head`: writing fails, and the processes must still be
    read, or one blocks on a full pipe and the command waits for ever."""
    import signal
    import sys

    from autumn_django.management.commands import autumn_sync

    talkative = (
        "import sys, json\n"
        "print('a line of its own', file=sys.stderr)\n"
        "for n in range(5000): print('autumn_sync progress: [1, 0]', file=sys.stderr)\n"
        "print('autumn_sync summary: ' + json.dumps({'created': 5000}))\n"
    )
    monkeypatch.setattr(
        autumn_sync.Command, "restart_command", lambda self: [sys.executable, "-c", talkative, "--"]
    )

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError("the reader went away")

    existing_users(1)

    def still_waiting(signum, frame):
        raise TimeoutError("the command still waits on its processes")

    previous = signal.signal(signal.SIGALRM, still_waiting)
    signal.alarm(20)
    try:
        out = io.StringIO()
        call_command("autumn_sync", "--processes", "2", "--json", stdout=out, stderr=Closed())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert json.loads(out.getvalue())["created"] == 10_000  # both summaries read
