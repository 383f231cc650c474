"""`orchestrator status` of an elastic pool: what the scaler last decided and why, its
workers by state, today's spend against the budget, and draining workers anywhere.

The scaler's records are written by hand, as the scaler and the workers write them
(`Keys.scaler_state`, `Keys.spend`, the heartbeat's `launch`, `idle_since` and
`draining`), so every case is exact; the scaler itself is tested in test_scaler.py.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest
import redis

from orchestrator.keys import Keys
from orchestrator.scaling.launches import day
from tests.conftest import CliRunner

SCALER = {"price_per_worker_hour": 0.8, "budget_per_day": 5.0, "slots_per_worker": 2}
STATE = {
    "demand": 9, "target": 4, "launching": 1, "active": 1, "idle": 1, "draining": 1,
    "spend_today": "0.400000", "budget": "5", "budget_reached": "0", "price": "0.8",
    "decision": "scale_up", "reason": "demand 9 jobs needs 4 workers", "leader": "c-1",
}  # fmt: skip


@pytest.fixture
def elastic(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """metal, then cloud with a scaler: $0.80 a worker-hour, $5.00 a day."""
    pools = [{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": SCALER}]
    monkeypatch.setenv("ORCHESTRATOR_POOLS", orjson.dumps(pools).decode())


def beat(client: redis.Redis, keys: Keys, pool: str, worker: str, **fields: Any) -> None:
    """A heartbeat as worker/heartbeat.py writes it, without the process."""
    client.sadd(keys.workers(pool), worker)
    client.hset(keys.worker(pool, worker), mapping={
        "pool": pool, "worker": worker, "host": "h", "pid": 1, "slots": 2, "running": 0,
        "version": "0", "time": time.time(), "launch": "", "idle_since": "", "draining": "",
        **fields,
    })  # fmt: skip


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds + micros / 1e6)


def status(run_cli: CliRunner) -> tuple[dict[str, Any], list[str]]:
    """`status --json`'s pools by name, and `status`'s lines with runs of spaces as one."""
    document = run_cli("status", "--json")
    shown = run_cli("status")
    assert document.code == shown.code == 0, document.err + shown.err
    parsed = orjson.loads(document.out)
    assert parsed["schema"] == 4
    assert max(len(line) for line in shown.out.splitlines()) <= 80
    lines = [" ".join(line.split()) for line in shown.out.splitlines()]
    return {pool["name"]: pool for pool in parsed["pools"]}, lines


def test_an_elastic_pool_shows_its_workers_target_spend_and_last_decision(
    elastic: None, sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner
) -> None:
    now = redis_now(sync_redis)
    sync_redis.hset(keys.scaler_state("cloud"), mapping={**STATE, "at": f"{now - 12.2:.3f}"})
    sync_redis.set(keys.spend("cloud", day(time.time())), "0.421337")
    beat(sync_redis, keys, "metal", "m1", running=1, draining="1")  # stopping: finishing 1
    beat(sync_redis, keys, "cloud", "c-busy", launch="cloud-a1", running=2)
    beat(sync_redis, keys, "cloud", "c-idle", launch="cloud-b2", idle_since=f"{now - 40:.3f}")
    beat(sync_redis, keys, "cloud", "c-drain", launch="cloud-c3", draining="1",
         idle_since=f"{now - 70:.3f}")  # fmt: skip

    pools, lines = status(run_cli)

    assert pools["metal"]["scaler"] is None
    assert pools["cloud"]["scaler"] == {
        "configured": True, "running": True, "leader": "c-1", "demand": 9, "target": 4,
        "workers": {"launching": 1, "active": 1, "idle": 1, "draining": 1},
        "spend_today": 0.421337, "budget": 5.0, "budget_reached": False,
        "price_per_worker_hour": 0.8,
        "decision": {"event": "scale_up", "reason": "demand 9 jobs needs 4 workers",
                     "at": round(now - 12.2, 3)},
    }  # fmt: skip
    workers = {w["id"]: w for w in pools["cloud"]["workers"]}
    assert {w: (b["launch"], b["draining"]) for w, b in workers.items()} == {
        "c-busy": ("cloud-a1", False), "c-drain": ("cloud-c3", True),
        "c-idle": ("cloud-b2", False),
    }  # fmt: skip
    assert workers["c-busy"]["idle_since"] is None
    assert workers["c-idle"]["idle_since"] == round(now - 40, 3)
    (metal_worker,) = pools["metal"]["workers"]
    assert (metal_worker["launch"], metal_worker["draining"]) == (None, True)

    at = lines.index("metal 1 worker draining: no new jobs, running ones finish")
    assert lines[at + 1] == (
        "cloud scaler 1 launching · 1 active · 1 idle · 1 draining → target 4 for 9 jobs"
    )
    assert lines[at + 2] == "$0.42 of $5.00 today ($0.80 a worker-hour)"
    assert re.fullmatch(r"scale_up 1[23]s ago: demand 9 jobs needs 4 workers", lines[at + 3])
    assert not any("budget reached" in line for line in lines)


def test_a_reached_budget_says_no_launches_and_that_jobs_wait_for_metal(
    elastic: None, sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner
) -> None:
    state = {
        **STATE, "launching": 0, "active": 0, "idle": 0, "draining": 2, "target": 0,
        "budget_reached": "1", "decision": "budget_reached",
        "reason": "spent 5.0012 of 5.0000 today", "at": f"{redis_now(sync_redis):.3f}",
    }  # fmt: skip
    sync_redis.hset(keys.scaler_state("cloud"), mapping=state)
    sync_redis.set(keys.spend("cloud", day(time.time())), "5.0012")

    pools, lines = status(run_cli)

    scaler = pools["cloud"]["scaler"]
    assert (scaler["budget_reached"], scaler["spend_today"], scaler["budget"]) == (
        True,
        5.0012,
        5.0,
    )
    at = lines.index("cloud scaler 2 draining → target 0 for 9 jobs")
    assert lines[at + 1 : at + 3] == [
        "$5.00 of $5.00 today ($0.80 a worker-hour)",
        "budget reached: no launches; jobs wait for metal",
    ]  # the decision's own reason would only repeat the spend


def test_a_configured_scaler_that_no_conductor_runs_says_so_with_the_spend_of_today(
    elastic: None, sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner
) -> None:
    """Only today's counter is today's spend: yesterday's is kept, but not shown."""
    sync_redis.set(keys.spend("cloud", day(time.time() - 86_400)), "4.9")
    sync_redis.set(keys.spend("cloud", day(time.time())), "0.0123")
    beat(sync_redis, keys, "cloud", "c-drain", launch="cloud-c3", draining="1")

    pools, lines = status(run_cli)

    assert pools["cloud"]["scaler"] == {
        "configured": True, "running": False, "leader": None, "demand": None, "target": None,
        "workers": None, "spend_today": 0.0123, "budget": 5.0, "budget_reached": False,
        "price_per_worker_hour": 0.8, "decision": None,
    }  # fmt: skip
    at = lines.index("cloud scaler no scaler running · 1 draining")
    assert lines[at + 1] == "$0.012 of $5.00 today ($0.80 a worker-hour)"


def test_a_long_pool_name_and_reason_wrap_within_80_columns(
    redis_url: str, sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No budget, a pool name longer than its column, a reason longer than the line."""
    name = "elastic_spot_instances_eu_west1"
    pools = [{"name": "metal", "order": 0}, {"name": name, "order": 1, "scaler": {}}]
    monkeypatch.setenv("ORCHESTRATOR_POOLS", orjson.dumps(pools).decode())
    reason = "launch command exited 1: " + "provider quota exceeded in region " * 3
    state = {**STATE, "budget": "", "price": "0", "decision": "launch_failed", "reason": reason}
    sync_redis.hset(keys.scaler_state(name), mapping=state)

    found, lines = status(run_cli)  # asserts the width

    scaler = found[name]["scaler"]
    assert (scaler["budget"], scaler["price_per_worker_hour"], scaler["spend_today"]) == (
        None, 0.0, 0.4,
    )  # fmt: skip
    at = lines.index(
        "elastic_spot_instance… 1 launching · 1 active · 1 idle · 1 draining → target 4"
    )
    assert lines[at + 1 : at + 3] == ["for 9 jobs", "$0.40 today, no budget"]
    told = " ".join(lines[at + 3 : lines.index("backlogs default 0")]).strip()
    assert told == " ".join(f"launch_failed: {reason}".split())  # no time: no age
