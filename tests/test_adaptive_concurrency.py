"""autumn_sync's adaptive concurrency: more requests in flight while Autumn
answers fast, half as many at the first sign of pushback."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from autumn_django import bulk
from autumn_django.bulk import AdaptiveConcurrency, BulkSync
from autumn_django.client import AutumnClient
from autumn_django.signals import disable_sync
from autumn_django.testing import make_secret_key


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def answer(window, clock, seconds, pushback=False):
    started = window.acquire()
    clock.now += seconds
    window.release(started, pushback)


def test_it_doubles_each_round_trip_while_answers_are_fast():
    clock = Clock()
    window = AdaptiveConcurrency(256, start=4, clock=clock)
    for _ in range(4):  # one round trip: an answer per slot, each 150 ms
        answer(window, clock, 0.0)
    assert window.limit == 8


def test_it_never_goes_above_its_ceiling():
    clock = Clock()
    window = AdaptiveConcurrency(10, start=4, clock=clock)
    for _ in range(100):
        answer(window, clock, 0.0)
    assert window.limit == 10 and window.highest == 10


def test_a_pushback_halves_it_once_per_round_trip():
    clock = Clock()
    window = AdaptiveConcurrency(256, start=64, clock=clock)
    answer(window, clock, 0.15)
    answer(window, clock, 0.15, pushback=True)
    assert window.limit == pytest.approx(32.5)
    answer(window, clock, 0.01, pushback=True)  # the same burst's 429s: one signal
    assert window.limit == pytest.approx(32.5)
    clock.now += 1.0
    answer(window, clock, 0.15, pushback=True)
    assert window.limit == pytest.approx(16.25) and window.decreases == 2


def test_after_a_pushback_it_grows_by_one_slot_per_round_trip():
    clock = Clock()
    window = AdaptiveConcurrency(256, start=16, clock=clock)
    answer(window, clock, 0.1, pushback=True)
    assert window.limit == 8
    for _ in range(8):  # a round trip of answers
        answer(window, clock, 0.1)
    assert 8.9 < window.limit < 9.1


def test_slow_answers_stop_the_doubling():
    clock = Clock()
    window = AdaptiveConcurrency(256, start=16, clock=clock)
    answer(window, clock, 0.1)
    answer(window, clock, 0.5)  # five times the fastest: Autumn is straining
    before = window.limit
    for _ in range(4):
        answer(window, clock, 0.1)
    assert window.limit < before + 1


@pytest.fixture
def latency_emulator(http_emulator):
    http_emulator.emulator.latency_ms = 40
    return http_emulator


@pytest.mark.django_db(transaction=True)
def test_a_bulk_run_grows_its_concurrency_when_answers_stay_fast(latency_emulator, django_user_model):
    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"u{n}", email=f"u{n}@example.com") for n in range(400)]
        )
    client = AutumnClient(make_secret_key(), base_url=latency_emulator.url, pool_size=256)
    summary = BulkSync(client, batch_size=400).push([django_user_model.objects.order_by("pk")])
    assert summary.failed == 0 and summary.counts["created"] == 400
    assert summary.concurrency > bulk.START_CONCURRENCY


@pytest.mark.django_db(transaction=True)
def test_a_bulk_run_backs_off_when_autumn_answers_429(latency_emulator, django_user_model):
    with disable_sync():
        django_user_model.objects.bulk_create(
            [django_user_model(username=f"u{n}", email=f"u{n}@example.com") for n in range(200)]
        )
    latency_emulator.emulator.fail_next(
        20, "customers.get_or_create", status=429, headers={"Retry-After": "0"}
    )
    client = AutumnClient(make_secret_key(), base_url=latency_emulator.url, pool_size=64, backoff_factor=0.01)
    runner = BulkSync(client, concurrency=64, batch_size=200)
    summary = runner.push([django_user_model.objects.order_by("pk")])
    assert summary.failed == 0 and runner.adaptive.decreases >= 1


def test_the_command_caps_concurrency_with_its_flag(autumn_emulator, django_user_model, db):
    with disable_sync():
        django_user_model.objects.bulk_create([django_user_model(username=f"u{n}") for n in range(50)])
    out = io.StringIO()
    call_command("autumn_sync", "--concurrency", "3", "--json", stdout=out, stderr=io.StringIO())
    assert 1 <= json.loads(out.getvalue())["concurrency"] <= 3
    assert bulk.MAX_CONCURRENCY == 256
