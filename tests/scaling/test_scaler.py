"""Elastic cloud end to end: a conductor whose scaler launches real cloud worker
processes (the `local` provider) when metal is full, releases them when idle, keeps to
a budget, and survives failing launches and a dying leader.

Asserted from what a user can see: receipts (which pool ran what, when), the launch
records the scaler keeps in Redis, and its decision log lines.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import history
from orchestrator.scaling.launches import day
from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest


def pools(**scaler: Any) -> list[dict[str, Any]]:
    return [
        {"name": "metal", "order": 0},
        {"name": "cloud", "order": 1, "scaler": {"provider": "local", **scaler}},
    ]


def launches(run: Stack) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in run.redis.hvals(run.keys.launches("cloud"))]


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def sleepers(count: int, seconds: float) -> list[dict[str, Any]]:
    return [{"task": "system.sleep", "args": [seconds]} for _ in range(count)]


def test_cloud_workers_launch_once_metal_is_full_and_leave_when_idle(
    stack: StackFactory, tmp_path: Path
) -> None:
    scaler = {
        "scale_up_after": 1, "slots_per_worker": 2, "max_workers": 3,
        "idle_release_after": 1, "boot_timeout": 20, "launch_rate": 60,
    }  # fmt: skip
    run = stack(pools=pools(**scaler))
    run.worker("metal", 2)
    conductor = run.conductor()
    run.dispatch(write_manifest(tmp_path / "burst_01.jsonl", sleepers(10, 2)))
    receipts = run.wait_for_receipts("burst_01", 10, timeout=90)

    assert {r["status"] for r in receipts} == {"succeeded"}
    assert any(r["pool"] == "cloud" for r in receipts)
    made = launches(run)
    assert 1 <= len(made) <= 3
    first_metal = min(at(e) for e in run.events(conductor, "routed") if e["pool"] == "metal")
    ups = run.events(conductor, "scale_up")
    assert ups
    assert min(at(e) for e in ups) - first_metal >= 1.0  # demand lasted scale_up_after
    assert max(e["launching"] + len(e["launches"]) for e in ups) <= 3
    booted = run.events(conductor, "worker_booted")
    assert len(booted) == len(made)

    finished = max(r["ended_at"] for r in receipts)
    run.wait_for(
        lambda: (
            not run.redis.smembers(run.keys.workers("cloud"))
            and all(r["state"] == "gone" for r in launches(run))
        ),
        "cloud workers released",
        timeout=30,
    )
    gone = max(r["ended_at"] for r in launches(run))
    assert gone - finished <= 1 + 2 + 1.5  # idle_release_after + 2 s (+ a heartbeat's lag)
    assert run.events(conductor, "scale_down")


def test_a_budget_of_one_worker_minute_pays_for_one_launch_then_metal_carries_on(
    stack: StackFactory, tmp_path: Path
) -> None:
    price = 3.6  # per worker-hour: a worker-minute costs 0.06
    scaler = {
        "scale_up_after": 0.5, "slots_per_worker": 2, "max_workers": 3, "launch_rate": 60,
        "idle_release_after": 30, "price_per_worker_hour": price, "budget_per_day": 0.06,
    }  # fmt: skip
    run = stack(pools=pools(**scaler))
    run.worker("metal", 2)
    conductor = run.conductor()
    run.dispatch(write_manifest(tmp_path / "thrifty_01.jsonl", sleepers(12, 1.5)))
    receipts = run.wait_for_receipts("thrifty_01", 12, timeout=90)

    assert {r["status"] for r in receipts} == {"succeeded"}
    assert len(launches(run)) == 1
    reached = run.events(conductor, "budget_reached")
    assert len(reached) == 1
    assert sum(r["pool"] == "metal" for r in receipts) >= 6
    # the dashboard's history has every cent of it, minute by minute (read in one MULTI)
    now = time.time()
    minutes = range(history.bucket_of(now) - 10, history.bucket_of(now) + 1)
    with run.redis.pipeline(transaction=True) as pipe:
        pipe.get(run.keys.spend("cloud", day(now)))
        for minute in minutes:
            pipe.hget(run.keys.history(minute), "spend:cloud")
        spent, *per_minute = pipe.execute()
    assert float(spent) > 0
    assert sum(float(x or 0) for x in per_minute) == pytest.approx(float(spent))


def test_a_failing_launch_command_backs_off_and_loses_nothing(
    stack: StackFactory, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    command = f"echo '{{pool}} {{target}} {{count}}' >> {calls}; exit 1"
    cloud = {"provider": "command", "launch": command, "scale_up_after": 0, "launch_rate": 60}
    run = stack(
        pools=[{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": cloud}]
    )
    run.worker("metal", 2)
    conductor = run.conductor()
    run.dispatch(write_manifest(tmp_path / "stuck_01.jsonl", sleepers(6, 1)))
    receipts = run.wait_for_receipts("stuck_01", 6, timeout=60)

    assert {(r["status"], r["pool"]) for r in receipts} == {("succeeded", "metal")}
    failed = run.events(conductor, "launch_failed")
    assert failed
    assert "exited 1" in failed[0]["error"]
    waits = [e["retry_in"] for e in failed]
    assert waits == sorted(waits)  # exponential, never a tight loop
    assert len(calls.read_text().splitlines()) == len(failed) <= 3


def test_a_launch_whose_worker_never_beats_fails_at_boot_timeout_and_backs_off(
    stack: StackFactory, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    command = f"echo '{{launch_id}}' >> {calls}"  # succeeds; no worker ever comes
    cloud = {
        "provider": "command", "launch": command, "scale_up_after": 0, "launch_rate": 60,
        "max_workers": 1, "boot_timeout": 1,
    }  # fmt: skip
    run = stack(
        pools=[{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": cloud}]
    )
    run.worker("metal", 1)
    conductor = run.conductor()
    run.dispatch(write_manifest(tmp_path / "ghost_01.jsonl", sleepers(5, 1.5)))
    receipts = run.wait_for_receipts("ghost_01", 5, timeout=60)

    assert {(r["status"], r["pool"]) for r in receipts} == {("succeeded", "metal")}
    failed = run.events(conductor, "launch_failed")
    assert failed
    assert "boot_timeout" in failed[0]["error"]
    assert [e["retry_in"] for e in failed] == [5.0 * 2**n for n in range(len(failed))]
    assert len(calls.read_text().splitlines()) <= len(failed) + 1
    assert {r["state"] for r in launches(run)} <= {"failed", "launching"}


def test_three_conductors_make_one_launch_per_decision_and_a_successor_takes_the_lease(
    stack: StackFactory, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    command = f"echo '{{target}} {{count}}' >> {calls}"  # succeeds; no worker ever comes
    cloud = {
        "provider": "command", "launch": command, "scale_up_after": 0, "launch_rate": 60,
        "max_workers": 1, "boot_timeout": 60,
    }  # fmt: skip
    run = stack(
        pools=[{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": cloud}]
    )
    run.worker("metal", 1)
    conductors = [run.conductor() for _ in range(3)]
    run.dispatch(write_manifest(tmp_path / "many_01.jsonl", sleepers(4, 3)))
    run.wait_for(lambda: calls.exists(), "a launch")
    time.sleep(2)
    assert calls.read_text().splitlines() == ["1 1"]  # one launch, whatever the conductors

    holder = run.redis.get(run.keys.scaler_lease)
    assert holder is not None
    leader = next(c for c in conductors if any(run.events(c, "scaler_lead")))
    leader.send_signal(signal.SIGKILL)
    leader.wait()
    killed = time.time()
    run.wait_for(
        lambda: run.redis.get(run.keys.scaler_lease) not in (None, holder), "a new leader", 10
    )
    assert time.time() - killed <= 3.0 + 1.0  # the lease's TTL, and a tick


def test_a_worker_started_with_idle_exit_leaves_by_itself(stack: StackFactory) -> None:
    run = stack()
    worker = run.start("worker", "--pool", "cloud", "--concurrency", "1", "--idle-exit", "1")
    run.wait_for(lambda: bool(run.redis.smembers(run.keys.workers("cloud"))), "the worker")
    assert worker.wait(10) == 0
    assert not run.redis.smembers(run.keys.workers("cloud"))
    assert run.events(worker, "worker_leaving")[0]["reason"] == "idle_exit"
