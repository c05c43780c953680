"""The soak of the issue: two ``db_worker`` processes on PostgreSQL against the
HTTP emulator, with faults, while users are created, changed, rolled back,
deleted and re-created; then everything must converge with no customer
left at Autumn for a user that no longer exists.

Faults during the load: 20% of requests answered 429/500/502/503, requests
taking up to 2 s (latency with jitter) and some held longer, lost requests
(the connection dropped before Autumn sees them) and lost replies (Autumn
did the work, the answer never came back), three ``kill -9`` of a worker
(each replaced at once) and an outage (10 s in the full soak).

It runs only when asked for: ``-k soak``, this file named on the command
line, or ``AUTUMN_SOAK_SECONDS`` set (the load's duration; 20 s by default,
the issue's full soak is 60). ``AUTUMN_SOAK_SEED`` picks the load.
``benchmarks/soak.py`` runs it repeatedly and reads the ``SOAK ...`` line
it prints.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict, deque
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from autumn_django import contract, mapping
from autumn_django.emulator.wire import Response, failure_response
from autumn_django.models import Customer

from .test_workers import start_db_workers, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECONDS = float(os.environ.get("AUTUMN_SOAK_SECONDS", "20"))
SEED = int(os.environ.get("AUTUMN_SOAK_SEED", "1"))
USERS = 30  # the pool the load works on
KILLS = 3
#: How long convergence may take once the load stops: generous, any machine.
CONVERGE_TIMEOUT = 600.0
WRITE_ROUTES = (contract.GET_OR_CREATE, contract.UPDATE, contract.DELETE)
State = Customer.State


class Rollback(Exception):
    pass


class Network:
    """Faults the emulator's own knobs do not give, around its request
    pipeline: lost replies (handled, then the connection dropped), an outage
    (every request refused or dropped, the customers kept), and a count of
    requests in flight."""

    def __init__(self, emulator, seed):
        self.emulator = emulator
        self._handle = emulator.handle
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.lost_reply_rate = 0.0
        self.outage = False
        self.in_flight = 0
        self.on_the_wire = Counter()  # (route, customer id) -> requests under way
        self.counts = Counter()
        self.lost_replies = []  # (time, route, customer id)
        emulator.handle = self.handle

    def chance(self):
        with self._lock:
            return self._random.random()

    def under_way(self, route):
        """The customer ids with a ``route`` request under way at Autumn."""
        with self._lock:
            return sorted({cid for (name, cid), count in self.on_the_wire.items() if name == route and count})

    def handle(self, method, path, headers, body):
        route = path.rsplit("/", 1)[-1]
        key = (route, customer_id_of(body))
        with self._lock:
            self.in_flight += 1
            self.on_the_wire[key] += 1
        try:
            if self.outage:
                time.sleep(self.chance() * 0.2)
                with self._lock:
                    self.counts["outage"] += 1
                return Response(0, drop=True) if self.chance() < 0.5 else failure_response(503)
            response = self._handle(method, path, headers, body)
            if response.status == 200 and route in WRITE_ROUTES and self.chance() < self.lost_reply_rate:
                with self._lock:
                    self.counts["lost_reply"] += 1
                    self.lost_replies.append((time.time(), route, customer_id_of(body)))
                return Response(0, drop=True)
            return response
        finally:
            with self._lock:
                self.in_flight -= 1
                self.on_the_wire[key] -= 1


def customer_id_of(body):
    if isinstance(body, bytes):
        try:
            body = json.loads(body or b"{}")
        except ValueError:
            return None
    return body.get("customer_id") if isinstance(body, dict) else None


class Worker:
    """One ``db_worker`` (started by the helper of test_workers), its stderr
    read as it comes so a chatty worker never blocks on a full pipe."""

    def __init__(self, server, settings, name):
        (self.process,) = start_db_workers(server, settings, count=1)
        self.name = name
        self.tail = deque(maxlen=400)
        self.tracebacks = 0
        self.outcome = "running"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.tail.append(line.rstrip())
            if line.startswith("Traceback"):
                self.tracebacks += 1

    def kill(self):
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        self.outcome = "killed"

    def stop(self, timeout=180.0):
        if self.process.poll() is None:
            self.process.terminate()  # graceful: the task under way is finished first
            try:
                self.process.wait(timeout=timeout)
                self.outcome = f"stopped ({self.process.returncode})"
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
                self.outcome = "killed at stop (did not stop in time)"
        self._reader.join(timeout=10)

    def account(self, lines=40):
        text = "\n    ".join(list(self.tail)[-lines:]) or "(nothing)"
        return f"  worker {self.name} (pid {self.process.pid}, {self.outcome}), stderr tail:\n    {text}"


class Load:
    """The site's side: a seeded random mix of user changes through the ORM,
    so the signals and tasks do the work."""

    def __init__(self, seed, started, network):
        self.model = get_user_model()
        self.network = network
        self.random = random.Random(seed)
        self.started = started
        self.users = {}  # pk -> the live user
        self.deleted = {}  # pk -> the email it had, for users deleted and not re-created
        self.history = defaultdict(list)  # pk -> [(seconds, what)]
        self.ops = Counter()
        self._serial = itertools.count(1)

    def note(self, pk, what):
        self.history[pk].append((round(time.time() - self.started, 2), what))

    def email(self):
        return f"soak{next(self._serial)}@example.com"

    def step(self):
        n = len(self.users)
        reusable = [pk for pk in self.deleted if pk not in self.users]
        # The races of the issue, made likely: a user deleted while a push of
        # its customer is on the wire, and one re-created while its delete is.
        self.pushed = [
            pk
            for route in (contract.GET_OR_CREATE, contract.UPDATE)
            for pk in map(int, filter(str.isdecimal, self.network.under_way(route)))
            if pk in self.users
        ]
        self.being_deleted = [
            pk
            for pk in map(int, filter(str.isdecimal, self.network.under_way(contract.DELETE)))
            if pk in self.deleted
        ]
        choices = {
            "create": 8 if n < USERS // 2 else (2 if n < USERS else 0),
            "change": 6 if n else 0,
            "rollback": 2 if n else 0,
            "delete": 2 if n > 3 else 0,
            "delete_while_pushed": 4 if self.pushed and n > 3 else 0,
            "recreate_pk": 1.5 if reusable and n < USERS else 0,
            "recreate_while_deleted": 4 if self.being_deleted and n < USERS else 0,
            "recreate_email": 1 if self.deleted and n < USERS else 0,
        }
        names = [name for name, weight in choices.items() if weight]
        op = self.random.choices(names, [choices[name] for name in names])[0]
        getattr(self, op)()
        self.ops[op] += 1

    def create(self, email=None, pk=None):
        serial = next(self._serial)
        fields = {"id": pk} if pk is not None else {}
        user = self.model.objects.create_user(
            username=f"soak{serial}", email=email or self.email(), password="x", **fields
        )
        self.users[user.pk] = user
        self.deleted.pop(user.pk, None)
        self.note(user.pk, f"created {user.email}" + (" (same pk)" if pk is not None else ""))
        return user

    def pick(self):
        return self.users[self.random.choice(sorted(self.users))]

    def change(self):
        user = self.pick()
        what = self.random.choice(["email", "name", "both"])
        if what in ("email", "both"):
            user.email = self.email()
        if what in ("name", "both"):
            user.first_name = f"First{next(self._serial)}"
            user.last_name = self.random.choice(["", "Last"])
        user.save()
        self.note(user.pk, f"changed {what}: {user.email} / {user.get_full_name()!r}")

    def rollback(self):
        """A change, a delete or a create, inside a transaction rolled back."""
        kind = self.random.choice(["change", "delete", "create"])
        user = self.pick()
        try:
            with transaction.atomic():
                if kind == "change":
                    user.email = self.email()
                    user.first_name = "RolledBack"
                    user.save()
                elif kind == "delete":
                    self.model.objects.get(pk=user.pk).delete()
                else:
                    self.model.objects.create_user(username=f"soak{next(self._serial)}", email=self.email())
                raise Rollback
        except Rollback:
            pass
        user.refresh_from_db()
        self.note(user.pk, f"rolled back a {kind}")

    def delete(self, user=None, why=""):
        user = user or self.pick()
        pk, email = user.pk, user.email
        user.delete()
        del self.users[pk]
        self.deleted[pk] = email
        self.note(pk, "deleted" + why)

    def delete_while_pushed(self):
        self.delete(self.users[self.random.choice(self.pushed)], " (a push on the wire)")

    def recreate_while_deleted(self):
        pk = self.random.choice(self.being_deleted)
        self.create(pk=pk)
        self.note(pk, "(re-created while its delete was on the wire)")

    def recreate_pk(self):
        pk = self.random.choice(sorted(pk for pk in self.deleted if pk not in self.users))
        self.create(pk=pk)

    def recreate_email(self):
        pk = self.random.choice(sorted(self.deleted))
        user = self.create(email=self.deleted[pk])
        self.note(user.pk, f"re-used the email of deleted user {pk}")


def selected(config):
    return (
        "AUTUMN_SOAK_SECONDS" in os.environ
        or "soak" in (config.option.keyword or "")
        or any("test_soak" in str(arg) for arg in config.args)
    )


def test_soak_with_faults_kills_and_an_outage_leaves_no_orphan(autumn_emulator_server, settings, request):
    """The issue's soak: nothing lost, duplicated or stale, and no orphan."""
    from django_tasks_db.models import DBTaskResult

    if not selected(request.config):
        pytest.skip("the soak runs when asked for: -k soak, or AUTUMN_SOAK_SECONDS=60")
    server = autumn_emulator_server
    emulator = server.emulator
    emulator.log = deque(maxlen=1_000_000)  # every request, for the account of a failure
    rng = random.Random(SEED)
    network = Network(emulator, SEED + 1)
    started = time.time()
    load = Load(SEED, started, network)
    outage = max(2.0, min(10.0, SECONDS / 6))
    outage_at = SECONDS * 0.55
    kill_at = [SECONDS * share for share in (0.2, 0.45, 0.8)][:KILLS]
    events = []  # (seconds, what)
    counts = Counter()
    workers = [Worker(server, settings, f"w{n}") for n in (1, 2)]
    dead_tasks = set()  # tasks RUNNING on a worker when it was killed: never finished
    report = []

    def event(what):
        events.append((round(time.time() - started, 2), what))

    def live():
        return [worker for worker in workers if worker.outcome == "running"]

    try:
        # --- the load, with faults ------------------------------------------------
        emulator.fail_rate = 0.2
        emulator.fail_status = (429, 500, 502, 503)
        network.lost_reply_rate = 0.03
        next_scripted = next_weather = 0.0
        while (elapsed := time.time() - started) < SECONDS:
            if elapsed >= next_weather:
                # Spells of a slow network (0 to 2 s a request) and a quick one, so
                # requests both overtake each other and keep the workers busy.
                next_weather += rng.uniform(2.0, 5.0)
                slow = emulator.latency_ms != 1000
                emulator.latency_ms = emulator.latency_jitter_ms = 1000 if slow else 50
            if kill_at and elapsed >= kill_at[0]:
                kill_at.pop(0)
                # Best when a request is on the wire: the killed worker's push may still land.
                deadline = time.monotonic() + 3
                while network.in_flight == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                victim = rng.choice(live())
                victim.kill()
                dead_tasks |= set(DBTaskResult.objects.filter(status="RUNNING").values_list("pk", flat=True))
                counts["kills"] += 1
                workers.append(Worker(server, settings, f"w{len(workers) + 1}"))
                event(f"kill -9 {victim.name} (pid {victim.process.pid}), started {workers[-1].name}")
            if not network.outage and outage_at <= elapsed < outage_at + outage:
                network.outage = True
                event(f"outage for {outage:.1f} s")
            elif network.outage and elapsed >= outage_at + outage:
                network.outage = False
                event("outage over")
            if elapsed >= next_scripted:
                next_scripted += rng.uniform(1.0, 3.0)
                route = rng.choice(WRITE_ROUTES)
                if rng.random() < 0.5:
                    emulator.fail_next(1, route, drop=True)
                    counts["lost_requests"] += 1
                else:
                    emulator.delay_next(1, route, ms=rng.uniform(1000, 2000))
                    counts["held"] += 1
            load.step()
            counts["backlog_max"] = max(counts["backlog_max"], DBTaskResult.objects.ready().count())
            time.sleep(rng.uniform(0.1, 0.7))
        network.outage = False
        load_seconds = time.time() - started
        during_load = Counter(emulator.statuses)
        event(f"load over after {sum(load.ops.values())} operations")

        # --- converge: faults off, the workers drain, then autumn_sync --retry -------
        emulator.fail_rate = 0.0
        emulator.latency_ms = emulator.latency_jitter_ms = 0
        network.lost_reply_rate = 0.0
        converge_started = time.monotonic()

        def age_and_check_drained():
            # Retries deferred for later are brought forward; tombstones are not
            # (their grace is for pushes still on the wire, which live workers may send).
            now = timezone.now()
            DBTaskResult.objects.filter(
                status="READY", run_after__gt=now, run_after__lt=now + timedelta(days=365)
            ).update(run_after=now)
            Customer.objects.filter(state__in=[State.FAILED, State.DELETING], next_attempt_at__gt=now).update(
                next_attempt_at=now
            )
            running = set(DBTaskResult.objects.filter(status="RUNNING").values_list("pk", flat=True))
            return not DBTaskResult.objects.ready().exists() and running <= dead_tasks

        wait_for(age_and_check_drained, timeout=CONVERGE_TIMEOUT, what="the workers to drain the queue")
        event("queue drained")
        for worker in live():
            worker.stop()
        wait_for(lambda: network.in_flight == 0, timeout=120, what="the requests in flight")
        tombstones = Customer.objects.filter(state=State.GONE).count()
        killed_mid_task = DBTaskResult.objects.filter(
            status="RUNNING"
        ).count()  # no worker left to finish them
        event(f"workers stopped, nothing in flight, {tombstones} tombstone(s) waiting")
        # No push can land any longer (no worker left, nothing on the wire), so
        # the tombstones are due now rather than PUSH_GRACE after their push.
        retries = 0
        while True:
            now = timezone.now()
            Customer.objects.filter(
                state__in=[State.GONE, State.FAILED, State.DELETING], next_attempt_at__gt=now
            ).update(next_attempt_at=now - timedelta(seconds=1))
            out = io.StringIO()
            call_command("autumn_sync", "--retry", "--no-fail-on-error", stdout=out, stderr=out)
            retries += 1
            report.append(f"autumn_sync --retry #{retries}: {out.getvalue().strip()}")
            left = Customer.objects.exclude(state=State.SYNCED).exclude(
                state=State.FAILED, next_attempt_at__isnull=True
            )
            if not left.exists() or time.monotonic() - converge_started > CONVERGE_TIMEOUT:
                break
            time.sleep(1)
        converge_seconds = time.monotonic() - converge_started
        event(f"converged after {retries} autumn_sync --retry run(s)")
    except BaseException:
        for worker in workers:
            worker.stop(timeout=60)
        print("Events: " + "; ".join(f"{t} s {what}" for t, what in events))
        print("\n".join(worker.account() for worker in workers))
        raise
    finally:
        for worker in workers:
            worker.stop(timeout=60)

    # --- what Autumn and the mirror hold ---------------------------------------------
    users = {user.pk: user for user in get_user_model().objects.all()}
    remote = {customer["id"]: customer for customer in emulator.customers()}
    rows = list(Customer.objects.order_by("pk"))
    by_id = {str(pk): user for pk, user in users.items()}
    orphans = sorted(set(remote) - set(by_id), key=lambda cid: (len(str(cid)), str(cid)))
    lost, stale, unsynced = [], [], []
    for pk, user in users.items():
        fields = mapping.payload_for(user).fields
        customer = remote.get(str(pk))
        if customer is None:
            lost.append(str(pk))
        elif any(customer.get(name) != fields[name] for name in ("email", "name")):
            stale.append(str(pk))
        if not Customer.objects.of(user).filter(state=State.SYNCED, customer_id=str(pk)).exists():
            unsynced.append(str(pk))
    per_user = Counter(row.object_id for row in rows if row.object_id is not None)
    duplicated = sorted(str(pk) for pk, count in per_user.items() if count > 1)
    left_rows = [row for row in rows if row.state != State.SYNCED or row.object_id is None]
    task_errors = list(DBTaskResult.objects.filter(status="FAILED"))
    out = io.StringIO()
    try:
        call_command("autumn_sync", "--check", stdout=out)
        drift = ""
    except Exception as error:  # CommandError: drift found
        drift = f"{error}: {out.getvalue().strip()}"
    statuses = Counter()
    for key, count in during_load.items():
        statuses[key.rsplit(" ", 1)[1]] += count
    injected = sum(statuses[status] for status in ("429", "500", "502", "503"))
    print(f"\nSOAK-STATUSES during the load: {dict(sorted(during_load.items()))}")
    print(
        f"\nSOAK seed={SEED} seconds={load_seconds:.0f} users={len(users)} "
        f"ops={sum(load.ops.values())} "
        + " ".join(f"{name}={load.ops[name]}" for name in sorted(load.ops))
        + f" requests={sum(during_load.values())} failures_injected={injected} "
        f"lost_requests={counts['lost_requests']} lost_replies={network.counts['lost_reply']} "
        f"held={counts['held']} outage_s={outage:.0f} outage_answers={network.counts['outage']} "
        f"kills={counts['kills']} killed_mid_task={killed_mid_task} workers={len(workers)} "
        f"backlog_max={counts['backlog_max']} tombstones={tombstones} "
        f"orphans={len(orphans)} lost={len(lost)} "
        f"stale={len(stale)} unsynced={len(unsynced)} duplicated={len(duplicated)} "
        f"left_rows={len(left_rows)} task_errors={len(task_errors)} drift={int(bool(drift))} "
        f"retry_runs={retries} converge_s={converge_seconds:.0f}"
    )

    problems = {
        "orphans": orphans,
        "lost": lost,
        "stale": stale,
        "unsynced": unsynced,
        "duplicated": duplicated,
        "left_rows": [f"{row.customer_id}:{row.state}" for row in left_rows],
        "task_errors": [task.pk for task in task_errors],
        "drift": drift,
    }
    if any(problems.values()):
        ids = {*orphans, *lost, *stale, *unsynced, *duplicated, *(row.customer_id for row in left_rows)}
        account = account_of(ids, rows, users, remote, load, network, emulator, started)
        account.append("Events: " + "; ".join(f"{t} s {what}" for t, what in events))
        account.extend(report[-3:])
        for task in task_errors[:5]:
            account.append(f"Task {task.pk} failed: {task.exception_class_path}\n{task.traceback[-1500:]}")
        account.extend(worker.account() for worker in workers)
        print("\n".join(account))
    assert not any(problems.values()), problems


def account_of(ids, rows, users, remote, load, network, emulator, started):
    """Each customer id concerned: the user now, what Autumn holds, the mirror
    rows, and one timeline of the site's changes and the requests for it as
    they landed at Autumn (with the replies that were lost)."""
    lines = ["", "SOAK FAILURE: the customers concerned"]
    for customer_id in sorted(ids, key=lambda cid: (len(str(cid)), str(cid))):
        lines.append(f"-- customer {customer_id}")
        pk = int(customer_id) if str(customer_id).isdecimal() else None
        user = users.get(pk)
        lines.append(f"   user now: {f'{user.email} / {user.get_full_name()!r}' if user else 'none'}")
        lines.append(f"   at Autumn: {remote.get(customer_id)}")
        for row in rows:
            if row.customer_id == customer_id or (pk is not None and row.object_id == str(pk)):
                lines.append(
                    f"   row {row.pk}: user={row.object_id} state={row.state} version={row.version} "
                    f"attempts={row.attempts} pushed_at={row.pushed_at} "
                    f"next_attempt_at={row.next_attempt_at} "
                    f"email={row.email} last_error={row.last_error[:200]!r}"
                )
        timeline = [(t, f"site: {what}") for t, what in load.history.get(pk, [])]
        for entry in emulator.requests():
            if customer_id_of(entry.body) == customer_id:
                body = {
                    k: v for k, v in (entry.body or {}).items() if k in ("email", "name", "new_customer_id")
                }
                timeline.append((entry.at - started, f"Autumn: {entry.route} -> {entry.status} {body}"))
        timeline.extend(
            (at - started, f"Autumn: the reply to {route} was lost")
            for at, route, cid in network.lost_replies
            if cid == customer_id
        )
        lines.extend(f"   {t:7.2f} s  {what}" for t, what in sorted(timeline, key=lambda item: item[0]))
    return lines
