"""A pool's prefetch (`prefetch_seconds`): short jobs are queued ahead of the pool's free
slots, long ones never wait behind a busy metal slot while cloud has a free one. Real
conductor and worker processes; what is asserted comes from receipts and the pool's
capacity counters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackFactory
from tests.live_stack import write_manifest


def busy(receipts: list[dict[str, Any]], at: float) -> int:
    """How many of these jobs were running at `at`, from their receipts."""
    return sum(1 for r in receipts if r["started_at"] <= at < r["ended_at"])


def test_no_sleeper_is_queued_on_metal_while_cloud_has_a_free_slot(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Sleepers of 2 s on metal 4 / cloud 10, 28 of them: a metal job that started late
    waited somewhere, and a second before it started cloud must have been full — else it
    sat in metal's queue behind a busy slot while cloud had a free one. 28 = two waves of
    14: whichever pool's first wave ends first by a millisecond, the second wave needs
    both, so metal always runs some of it."""
    run = stack()
    run.worker("metal", 4)
    run.worker("cloud", 10)
    run.conductor()
    sleepers = [{"task": "system.sleep", "args": [2]} for _ in range(28)]
    run.dispatch(write_manifest(tmp_path / "sleepers_01.jsonl", sleepers))
    receipts = run.wait_for_receipts("sleepers_01", 28, timeout=60)
    assert {r["status"] for r in receipts} == {"succeeded"}
    metal = [r for r in receipts if r["pool"] == "metal"]
    cloud = [r for r in receipts if r["pool"] == "cloud"]
    first = min(r["started_at"] for r in receipts)
    late = [m for m in metal if m["started_at"] > first + 0.5]
    assert late  # metal ran in the second wave too: it was not skipped
    for job in late:
        assert busy(cloud, job["started_at"] - 1.0) == 10, (job, cloud)


def test_a_pool_of_short_jobs_prefetches_what_it_finishes_in_prefetch_seconds(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Echo jobs finish hundreds a second: the rate measured from the pool's receipts
    gives it a prefetch, at most its slots."""
    run = stack(prefetch_seconds="0.1")
    run.worker("metal", 4)
    run.conductor()
    echoes = [{"task": "system.echo", "args": [n]} for n in range(1500)]
    run.dispatch(write_manifest(tmp_path / "echoes_01.jsonl", echoes))
    capacity = run.keys.capacity("metal")
    seen = 0
    deadline = time.monotonic() + 60
    while len(run.receipts("echoes_01")) < 1500 and time.monotonic() < deadline:
        seen = max(seen, int(run.redis.hget(capacity, "prefetch") or 0))
        time.sleep(0.02)
    assert 0 < seen <= 4
    assert float(run.redis.hget(capacity, "rate") or 0) > 10


# It watches the batch's first quarter second: alone on the machine, after the parallel
# pass (under its load, sleeps of 50 ms ran long and the first receipts came first).
@pytest.mark.serial
def test_a_batch_of_short_jobs_gets_its_prefetch_from_the_first_jobs_that_finish(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Jobs of 50 ms on 2 slots: the slots finish 40 a second, 4 within 0.1 s, so the
    pool may hold 2 (its slots) beyond them — from its first receipts on, not once a rate
    learnt over seconds has caught up (that gave this batch no prefetch for its first
    second, so each job waited for a conductor round trip)."""
    run = stack(prefetch_seconds="0.1")
    run.worker("metal", 2)
    run.conductor()
    short = [{"task": "system.sleep", "args": [0.05]} for _ in range(60)]
    run.dispatch(write_manifest(tmp_path / "short_01.jsonl", short))
    capacity = run.keys.capacity("metal")
    seen = 0
    while len(run.receipts("short_01")) < 10:  # the first quarter second of the batch
        seen = max(seen, int(run.redis.hget(capacity, "prefetch") or 0))
        time.sleep(0.01)
    assert seen == 2
    length = float(run.redis.hget(capacity, "job_s") or 0)
    assert 0.05 <= length < 0.5  # the mean length of a job, which sized the prefetch
    receipts = run.wait_for_receipts("short_01", 60, timeout=60)
    assert {r["status"] for r in receipts} == {"succeeded"}
