"""Pacing: one budget per route, kept under Autumn's fixed one-second windows
by every process that shares a Redis, paused by a 429 any of them sees, and
never a failed save when Redis is gone. The multi-process tests run real
processes against the HTTP emulator with Autumn's real limits on, and
count the requests per window at the emulator."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from autumn_django import conf, pacing
from autumn_django.client import AutumnClient
from autumn_django.emulator import Emulator, EmulatorServer
from autumn_django.exceptions import NoCallSlot, RateLimited
from autumn_django.models import Customer
from autumn_django.pacing import LocalPacer, SharedPacer
from autumn_django.testing import make_secret_key

REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/15"
ROOT = Path(__file__).resolve().parent.parent
UPDATE_LIMIT = 25  # Autumn's customers.update limit, calls a second (2.1)


def redis_or_skip():
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not reachable at 127.0.0.1:6379, and CI must run this test")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


# --- one process ---------------------------------------------------------------------------------


def test_calls_are_spread_evenly_over_each_second():
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 20}, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: True)
    slots = [pacer.wait("customers.update") for _ in range(5)]
    assert [round(slot - 100, 3) for slot in slots] == [0, 0.05, 0.1, 0.15, 0.2]


def test_a_429_pauses_the_route_for_its_retry_after():
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 20}, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: True)
    pacer.pause("customers.update", 2.0)
    assert pacer.wait("customers.update") == 102.0
    assert pacer.wait("customers.get") == 102.0  # not paced, not paused: at once


def test_inside_a_transaction_a_long_wait_is_refused_not_slept():
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 2}, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: False)
    pacer.wait("customers.update")
    with pytest.raises(NoCallSlot, match="in a database transaction") as refused:
        pacer.wait("customers.update")  # its slot is 0.5 s away
    assert fake.slept == [] and refused.value.retryable and refused.value.retry_after == 0.5


def test_inside_a_transaction_a_short_wait_is_slept():
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 20}, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: False)
    pacer.wait("customers.update")
    pacer.wait("customers.update")
    assert fake.slept == [pytest.approx(0.05)]


def test_a_wait_longer_than_allowed_is_refused():
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 1}, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: True)
    pacer.wait("customers.update")
    with pytest.raises(NoCallSlot, match="more than the wait allowed"):
        pacer.wait("customers.update", max_wait=0.5)
    assert pacer.wait("customers.update", max_wait=1.0) == 101.0  # the refused call took no slot


class RecordingPacer:
    def __init__(self):
        self.waits, self.pauses = [], []

    def wait(self, route, *, max_wait=None):
        self.waits.append(route)

    def pause(self, route, seconds):
        self.pauses.append((route, seconds))


def test_the_client_reports_a_429_to_its_pacer(http_emulator):
    http_emulator.emulator.add_customer(id="c1")
    http_emulator.emulator.fail_next(1, "customers.update", status=429, headers={"Retry-After": "3"})
    pacer = RecordingPacer()
    with AutumnClient(make_secret_key(), base_url=http_emulator.url, max_retries=0, pacer=pacer) as client:
        with pytest.raises(RateLimited):
            client.update_customer("c1", name="x")
    assert pacer.pauses == [("customers.update", 3.0)]


def test_a_retry_after_a_429_takes_its_own_slot(http_emulator):
    http_emulator.emulator.add_customer(id="c1")
    http_emulator.emulator.fail_next(1, "customers.update", status=429, headers={"Retry-After": "0"})
    pacer = RecordingPacer()
    with AutumnClient(
        make_secret_key(), base_url=http_emulator.url, max_retries=1, backoff_factor=0.01, pacer=pacer
    ) as client:
        client.update_customer("c1", name="x")
    assert pacer.waits == ["customers.update", "customers.update"]
    assert [route for route, _ in pacer.pauses] == ["customers.update"]


@pytest.mark.django_db
def test_a_task_that_finds_no_slot_leaves_its_row_for_a_retry(
    autumn_emulator, make_user, commit, autumn_settings
):
    autumn_settings(RATE_LIMITS={"customers.update": 0.001})  # one call, then a wait of 1,000 s
    with commit():
        user = make_user()
    for email in ("a@example.com", "b@example.com"):
        user.email = email
        with commit():
            user.save()
    row = Customer.objects.of(user).get()
    assert row.state == "failed" and "no call slot" in row.last_error and row.next_attempt_at is not None


# --- several processes, one budget (Redis) -------------------------------------------------------


@pytest.fixture
def limited_emulator():
    """The HTTP emulator with Autumn's real limits, and eight customers."""
    emulator = Emulator(rate_limits=True)
    for number in range(8):
        emulator.add_customer(id=f"c{number}")
    with EmulatorServer(emulator) as server:
        yield server


def run_processes(server, count, *, seconds=3.0, shared=True, threads=8):
    """``count`` worker processes calling customers.update together; what
    each saw, and the emulator's count of update requests per one-second window."""
    scope = uuid.uuid4().hex
    start_at = time.time() + 1.5  # all start together, once their imports are done
    args = [sys.executable, "-m", "tests.pacing_worker", "--url", server.url, "--key", make_secret_key()]
    args += [
        "--scope",
        scope,
        "--seconds",
        str(seconds),
        "--threads",
        str(threads),
        "--start-at",
        str(start_at),
    ]
    if shared:
        args += ["--redis", REDIS_URL]
    processes = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    seen = [json.loads(process.communicate(timeout=60)[0])["seen"] for process in processes]
    windows = Counter(int(entry.at) for entry in server.emulator.requests("customers.update"))
    return seen, windows


def test_two_processes_sharing_the_budget_never_exceed_a_routes_limit_in_any_window(limited_emulator):
    redis_or_skip()
    seen, windows = run_processes(limited_emulator, 2)
    print("shared: update calls per one-second window at the emulator", dict(sorted(windows.items())), seen)
    assert max(windows.values()) <= UPDATE_LIMIT, windows
    assert all(set(each) == {"ok"} for each in seen), seen  # not one 429
    total = sum(each["ok"] for each in seen)
    assert total >= 0.5 * 22.5 * 3  # the budget is used (loosely: a loaded machine starts late)


def test_two_processes_pacing_alone_do_exceed_it(limited_emulator):
    """The control: the same load, each process with its own budget."""
    seen, windows = run_processes(limited_emulator, 2, shared=False)
    print("alone: update calls per one-second window at the emulator", dict(sorted(windows.items())), seen)
    assert max(windows.values()) > UPDATE_LIMIT or any("429" in each for each in seen), (windows, seen)


def test_a_429_seen_by_one_process_pauses_every_process(limited_emulator):
    redis_or_skip()
    pacer = SharedPacer(REDIS_URL, conf.rate_limits("2.1"), scope=uuid.uuid4().hex)
    pacer.pause("customers.update", 1.5)  # as a process that saw a 429 does
    started = time.monotonic()
    other = SharedPacer(REDIS_URL, conf.rate_limits("2.1"), scope=pacer.scope)  # another process's
    other.wait("customers.update")
    assert time.monotonic() - started >= 1.4


def test_a_429_in_one_process_stops_the_other_until_retry_after(limited_emulator):
    redis_or_skip()
    # The first call of either process is answered 429, Retry-After 2 s.
    limited_emulator.emulator.fail_next(1, "customers.update", status=429, headers={"Retry-After": "2"})
    seen, _ = run_processes(limited_emulator, 2, seconds=4.0)
    assert sum(each.get("429", 0) for each in seen) == 1
    log = limited_emulator.emulator.requests("customers.update")
    refused_at = next(entry.at for entry in log if entry.status == 429)
    answered = [entry.at for entry in log if entry.status == 200]
    # Calls already on their way (one per thread at most) may land just after
    # the 429; every later call waited the two seconds, in both processes.
    early = [at for at in answered if at < refused_at + 1.9]
    assert len(early) <= 2 * 8 and min(at for at in answered if at > refused_at + 0.5) >= refused_at + 1.9
    assert {each.get("ok", 0) > 0 for each in seen} == {True}


@pytest.mark.django_db(transaction=True)
def test_a_dead_redis_degrades_to_pacing_alone_with_a_warning_and_the_save_syncs(
    autumn_emulator, make_user, autumn_settings, caplog
):
    autumn_settings(RATE_LIMIT_STORE="redis://127.0.0.1:1/0")  # nothing listens there
    pacing._pacers.clear()
    with caplog.at_level(logging.WARNING, logger="autumn_django.pacing"):
        user = make_user()
    assert Customer.objects.of(user).get().state == "synced"
    assert "cannot be reached" in caplog.text and "paces itself alone" in caplog.text
    assert "redis://" not in caplog.text  # the URL (it may hold a password) is not logged


def test_processes_waiting_on_the_shared_budget_each_get_their_share():
    """Four processes (pacers of their own, one Redis) calling as fast as
    they can: none is starved by the others coming back from their calls."""
    redis_or_skip()
    import threading

    scope, counts = uuid.uuid4().hex, Counter()
    stop = time.monotonic() + 3.0

    def process(number):
        pacer = SharedPacer(REDIS_URL, {"customers.update": 20}, scope=scope, may_sleep=lambda: True)
        while time.monotonic() < stop:
            pacer.wait("customers.update", max_wait=5)
            counts[number] += 1

    threads = [threading.Thread(target=process, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(counts.values())
    assert total <= 20 * 3 + 4 and min(counts[n] for n in range(4)) >= total * 0.1, counts


def test_the_shared_budgets_bursts_keep_every_window_one_call_under_autumns_limit():
    """Spaced 1/rate apart, a window holds ceil(rate) calls; a burst adds
    calls only where that leaves one under Autumn's limit."""
    for version in ("2.1", "2.2", "2.3"):
        ceilings = conf.autumn_limits(version)
        for route, rate in conf.rate_limits(version).items():
            most_in_a_window = pacing.burst(rate, ceilings[route]) - 1 + math.ceil(rate)
            assert most_in_a_window <= max(ceilings[route] - 1, math.ceil(rate)), (version, route, rate)
    assert pacing.burst(22.5, 25) == 2  # updates: 24 at most in a window
    assert pacing.burst(4.5, 5) == 1  # lists at 2.1: strictly spaced
    assert pacing.burst(25, 25) == 1  # a budget set to the limit itself leaves no room
    assert pacing.burst(12, 25) == 1  # a site's lower rate keeps the room it left
    assert pacing.burst(1000, 4000) == 100  # a tenth of its second, not Autumn's 3,000 spare


def test_the_shared_budget_lets_its_burst_through_and_spaces_the_rest():
    """A call that comes late for its slot keeps the time it lost (the
    burst), so four processes sharing 22.5 a second get 22.5, not 22."""
    redis_or_skip()
    pacer = SharedPacer(
        REDIS_URL, {"customers.update": 22.5}, scope=uuid.uuid4().hex, ceilings={"customers.update": 25}
    )
    started = time.monotonic()
    pacer.wait("customers.update")
    pacer.wait("customers.update")
    burst_took = time.monotonic() - started
    pacer.wait("customers.update")
    third_at = time.monotonic() - started
    assert burst_took < 0.03 and third_at >= 1 / 22.5 - 0.002, (burst_took, third_at)


def test_the_threads_of_one_process_wait_in_line_so_one_asks_redis_per_slot(monkeypatch):
    """Eight threads waiting on one route: one of them asks Redis when the
    next slot falls due, not all eight (each asking costs a round trip)."""
    redis_or_skip()
    import threading

    from pyrate_limiter import RedisStateStore

    asked, real_check = Counter(), RedisStateStore.check

    def counting(self, *args):
        asked["checks"] += 1
        return real_check(self, *args)

    monkeypatch.setattr(RedisStateStore, "check", counting)
    pacer = SharedPacer(REDIS_URL, {"customers.update": 20}, scope=uuid.uuid4().hex, may_sleep=lambda: True)
    stop, granted = time.monotonic() + 1.5, Counter()

    def work():
        while time.monotonic() < stop:
            pacer.wait("customers.update", max_wait=5)
            granted["slots"] += 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted["slots"] >= 20  # the budget is used
    assert asked["checks"] <= 3 * granted["slots"], (asked, granted)  # eight threads alone: about 8x


def test_get_or_create_and_get_share_one_budget_as_they_share_one_cap_at_autumn():
    """240,000 a minute for both together: a get takes a slot of the same
    spacing as get_or_create, and a 429 on one pauses the other."""
    fake = FakeTime()
    limits = {"customers.get_or_create": 10, "customers.get": 10, "customers.update": 10}
    pacer = LocalPacer(limits, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: True)
    slots = [
        pacer.wait(route) for route in ("customers.get_or_create", "customers.get", "customers.get_or_create")
    ]
    assert [round(slot - 100.0, 3) for slot in slots] == [0.0, 0.1, 0.2]
    assert pacer.wait("customers.update") == fake.now  # a limit of its own: not behind them
    pacer.pause("customers.get", 5)
    paused_at = fake.now
    pacer.wait("customers.get_or_create")
    assert fake.now >= paused_at + 5


def test_the_shared_budget_of_get_or_create_and_get_is_one_key_in_redis():
    pacer = SharedPacer(REDIS_URL, conf.rate_limits("2.1"), scope="s")
    assert pacer.key("customers.get") == pacer.key("customers.get_or_create") != pacer.key("customers.update")
    assert pacer.key("customers.get", "pause") == pacer.key("customers.get_or_create", "pause")


def test_get_and_get_or_create_set_apart_by_the_site_are_paced_apart():
    """One budget spaced by two rates would let the slower hold up the faster."""
    fake = FakeTime()
    limits = {"customers.get_or_create": 3600, "customers.get": 1}
    pacer = LocalPacer(limits, clock=fake.clock, sleep=fake.sleep, may_sleep=lambda: True)
    pacer.wait("customers.get")
    pacer.wait("customers.get_or_create")
    assert fake.slept == []
    shared = SharedPacer(REDIS_URL, limits, scope="s")
    assert shared.key("customers.get") != shared.key("customers.get_or_create")


def test_inside_a_transaction_a_call_waits_a_quarter_second_in_all_not_each_time():
    """A pause that comes while the call sleeps is not a fresh 0.25 s."""
    fake = FakeTime()
    pacer = LocalPacer({"customers.update": 4}, clock=fake.clock, may_sleep=lambda: False)

    def sleep(seconds):
        fake.sleep(seconds)
        if len(fake.slept) == 1:
            pacer.pause("customers.update", 0.24)  # another thread met a 429 meanwhile

    pacer._sleep = sleep
    pacer.wait("customers.update")
    with pytest.raises(NoCallSlot):
        pacer.wait("customers.update")
    assert sum(fake.slept) <= pacing.IN_TRANSACTION_WAIT


def test_a_429_while_a_call_waits_in_line_is_waited_out_by_it():
    """Waiting behind the process's other threads is waiting too: a pause
    set meanwhile holds the call back like any other."""
    redis_or_skip()
    import threading

    pacer = SharedPacer(REDIS_URL, {"customers.update": 20}, scope=uuid.uuid4().hex, may_sleep=lambda: True)
    _, _, line = pacer._bucket("customers.update", 20)
    line.acquire()  # another thread of the process is first in line
    called_at = []
    waiter = threading.Thread(
        target=lambda: (pacer.wait("customers.update", max_wait=10), called_at.append(time.monotonic()))
    )
    waiter.start()
    time.sleep(0.2)
    pacer.pause("customers.update", 1.0)  # Autumn answered that thread 429, Retry-After 1
    paused_at = time.monotonic()
    line.release()
    waiter.join(10)
    assert called_at and called_at[0] >= paused_at + 0.9
