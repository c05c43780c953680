"""The bulk engine's parts that autumn_sync's processes rely on: how many
processes a push runs in, one summary from theirs, and each one's share of
the rate budget."""

from __future__ import annotations

import pytest

from autumn_django import bulk, conf
from autumn_django.client import bulk_client
from autumn_django.pacing import LocalPacer, SharedPacer


@pytest.mark.parametrize(
    "total, cpus, expected",
    [(0, 4, 1), (1_999, 4, 1), (4_000, 4, 2), (20_000, 2, 2), (20_000, 4, 4), (10**6, 64, 8)],
)
def test_auto_starts_a_process_per_cpu_and_per_two_thousand_objects(monkeypatch, total, cpus, expected):
    monkeypatch.setattr(bulk, "available_cpus", lambda: cpus)
    assert bulk.processes_for(total) == expected


@pytest.mark.parametrize(
    "quotas, expected",
    [
        ({}, 16),
        ({"": "max 100000"}, 16),
        ({"": "200000 100000"}, 2),  # a container's
        ({"system.slice/cron.service": "150000 100000"}, 1),  # systemd CPUQuota=150%, nested
        ({"system.slice": "300000 100000", "system.slice/cron.service": "max 100000"}, 3),  # above it
    ],
)
def test_the_cpus_available_are_within_the_cgroups_quotas(monkeypatch, tmp_path, quotas, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    (tmp_path / "cgroup").write_text("0::/system.slice/cron.service\n")
    for folder, quota in quotas.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "cpu.max").write_text(quota + "\n")
    monkeypatch.setattr(bulk, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(bulk, "PROC_CGROUP", tmp_path / "cgroup")
    assert bulk.available_cpus() == expected


def test_a_key_belongs_to_one_shard_whatever_else_exists():
    keys = [*range(1, 200), "team:7", "8a6e0804-2bd0-4672-b79f-d97ec2e0d7f8"]
    shards = {key: bulk.shard_of(key, 3) for key in keys}
    assert set(shards.values()) == {1, 2, 3}
    assert {key: bulk.shard_of(key, 3) for key in reversed(keys[5:])} == {k: shards[k] for k in keys[5:]}


def test_one_summary_adds_up_the_summaries_of_the_processes():
    summary = bulk.Summary()
    for created, failed, calls in ((3, 1, 4), (2, 0, 2)):
        part = bulk.Summary(concurrency=10)
        part.counts[bulk.Action.CREATED] += created
        part.counts["would_create"] += 1
        for number in range(failed):
            part.add_error(f"user {number}", str(number), "refused")
        part.calls["customers.get_or_create"] = calls
        summary.add(part.as_dict() | {"would_create": 1})
    data = summary.as_dict()
    assert (data["created"], data["failed"], summary.counts["would_create"]) == (5, 1, 2)
    assert data["api_calls"] == {"customers.get_or_create": 6}
    assert data["errors"] == [{"object": "user 0", "customer_id": "0", "error": "refused"}]
    assert data["concurrency"] == 20


def test_a_shard_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="the first is 1 of 2"):
        bulk.BulkSync(object(), shard=(0, 2))  # type: ignore[arg-type]


def test_each_of_several_processes_paces_itself_to_its_share_of_the_budget(autumn_settings):
    autumn_settings()
    full = conf.load().rate_limits
    pacer = bulk_client(8, share=4).rate_limiter
    assert isinstance(pacer, LocalPacer)
    assert pacer.limits["customers.update"] == pytest.approx(full["customers.update"] / 4)
    assert pacer.limits["customers.get_or_create"] == pytest.approx(full["customers.get_or_create"] / 4)


def test_with_a_shared_budget_the_processes_share_it_rather_than_divide_it(autumn_settings):
    autumn_settings(RATE_LIMIT_STORE="redis://127.0.0.1:6379/15")
    pacer = bulk_client(8, share=4).rate_limiter
    assert isinstance(pacer, SharedPacer) and pacer.limits == conf.load().rate_limits
    # While Redis cannot be reached, each paces itself to its share.
    update = conf.load().rate_limits["customers.update"]
    assert pacer._fallback.limits["customers.update"] == pytest.approx(update / 4)
