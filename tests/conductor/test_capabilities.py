"""Workers announce the tasks they run; the conductor routes by what they announce (it
holds no task code of its own), and at start-up gives metal its turn before cloud."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import orjson
import pytest
import redis.asyncio
import structlog

from orchestrator.conductor import liveness
from orchestrator.conductor.rounds import Conductor
from orchestrator.keys import Keys
from orchestrator.settings import load_settings
from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest

CORE_TASKS = '["workers.tasks"]'  # without tests.fixtures.tasks: no image.resize


def worker_without_fixtures(run: Stack, pool: str, slots: int) -> None:
    """A worker whose code lacks the fixture tasks (image.*), as an older deployment's."""
    run.env["ORCHESTRATOR_TASK_PACKAGES"] = CORE_TASKS
    try:
        run.worker(pool, slots)
    finally:
        run.env["ORCHESTRATOR_TASK_PACKAGES"] = '["workers.tasks", "tests.fixtures.tasks"]'


def test_the_heartbeat_announces_the_tasks_a_worker_runs(stack: StackFactory) -> None:
    """The worker's heartbeat carries its task names, comma-joined."""
    run = stack()
    worker_without_fixtures(run, "metal", 1)
    (worker,) = run.redis.smembers(run.keys.workers("metal"))
    tasks = run.redis.hget(run.keys.worker("metal", worker.decode()), "tasks").decode().split(",")
    assert "system.sleep" in tasks
    assert "image.resize" not in tasks


def test_a_task_no_live_worker_runs_waits_then_runs_when_such_a_worker_starts(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Not dead-lettered as unknown: parked, visible, and run once a worker announces it."""
    run = stack()
    worker_without_fixtures(run, "metal", 2)
    conductor = run.conductor()
    run.dispatch(
        write_manifest(
            tmp_path / "later_01.jsonl",
            [{"task": "image.resize", "args": [10]}, {"task": "system.echo", "args": [1]}],
        )
    )
    run.wait_for(lambda: run.redis.llen(run.keys.no_worker("image.resize")) == 1, "parked job")
    assert run.wait_for_receipts("later_01", 1)[0]["task"] == "system.echo"
    assert run.redis.llen(run.keys.dead) == 0
    assert run.redis.zrange(run.keys.no_worker_tasks, 0, -1) == [b"image.resize"]
    parked = run.events(conductor, "no_worker")
    assert parked[0]["job_id"] == "later_01:1"
    assert "no live worker in any pool runs image.resize" in parked[0]["reason"]

    run.worker("cloud", 1)  # this one has the fixture tasks
    receipts = {r["job_id"]: r for r in run.wait_for_receipts("later_01", 2)}
    assert receipts["later_01:1"]["status"] == "succeeded"
    assert receipts["later_01:1"]["pool"] == "cloud"
    assert run.redis.exists(run.keys.no_worker("image.resize"), run.keys.no_worker_tasks) == 0


def test_a_task_only_some_pools_run_goes_only_there_even_when_metal_is_free(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Per-pool capabilities: image.* runs on cloud though metal has free slots."""
    run = stack()
    worker_without_fixtures(run, "metal", 4)
    run.worker("cloud", 4)
    run.conductor()
    lines = [{"task": "image.resize", "args": [n]} for n in range(3)]
    lines += [{"task": "system.echo", "args": [n]} for n in range(3)]
    run.dispatch(write_manifest(tmp_path / "caps_01.jsonl", lines))
    receipts = run.wait_for_receipts("caps_01", 6)
    assert {r["pool"] for r in receipts if r["task"] == "image.resize"} == {"cloud"}
    assert {r["pool"] for r in receipts if r["task"] == "system.echo"} == {"metal"}


def test_a_pinned_job_waits_for_a_worker_of_its_pool_that_runs_it(
    stack: StackFactory, tmp_path: Path
) -> None:
    """meta.pool=metal with only cloud running the task: it waits for metal, not cloud."""
    run = stack()
    worker_without_fixtures(run, "metal", 1)
    run.worker("cloud", 1)
    run.conductor()
    line = {"task": "image.resize", "args": [10], "meta": {"pool": "metal"}}
    run.dispatch(write_manifest(tmp_path / "pin_01.jsonl", [line]))
    member = "image.resize@metal"
    run.wait_for(lambda: run.redis.llen(run.keys.no_worker(member)) == 1, "parked for metal")
    time.sleep(1.0)  # a few rounds: it stays parked, not bounced between lists
    assert run.redis.llen(run.keys.no_worker(member)) == 1
    assert run.receipts("pin_01") == []
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status"],
        env=run.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "waiting for a worker in metal that runs image.resize: 1 job" in status.stdout
    run.worker("metal", 1)  # this one runs image.resize; the old metal worker is still up
    time.sleep(1.0)
    assert run.receipts("pin_01") == [], "a pool runs a task only when all its workers do"


def test_a_job_whose_arguments_do_not_fit_is_dead_lettered_by_the_worker_without_retries(
    stack: StackFactory,
) -> None:
    """The conductor has no task code to check arity with; the worker does, before a run."""
    run = stack()
    run.worker("metal", 1)
    run.conductor()
    envelope = {"id": "bad:1", "batch": "bad", "task": "system.sleep", "args": [1, 2, 3],
                "dispatched_at": time.time()}  # fmt: skip
    run.redis.rpush(run.keys.backlog("backlog:default"), orjson.dumps(envelope))
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "a dead letter")
    dead = orjson.loads(run.redis.lindex(run.keys.dead, 0))
    assert dead["reason"] == "invalid_args"
    assert dead["receipt"]["attempt"] == 1
    assert run.receipts("bad")[0]["status"] == "failed"


def test_metal_gets_the_work_even_when_a_cloud_worker_announces_itself_first(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Cloud up first, metal 300 ms later, 8 jobs, metal slots 8: all 8 run on metal."""
    run = stack(heartbeat_interval=5)
    run.conductor()
    run.worker("cloud", 8)
    run.dispatch(
        write_manifest(
            tmp_path / "boot_01.jsonl", [{"task": "system.echo", "args": [n]} for n in range(8)]
        )
    )
    time.sleep(0.3)
    run.worker("metal", 8)
    receipts = run.wait_for_receipts("boot_01", 8)
    assert [r["pool"] for r in receipts] == ["metal"] * 8


async def test_jobs_waiting_for_a_worker_are_warned_about_once_a_minute(
    redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `no_worker` warning names the task and the wait, then repeats only a minute on."""
    monkeypatch.setattr(liveness, "NO_WORKER_WARN_AFTER", 0.2)
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.zadd(keys.no_worker_tasks, {"image.resize": (time.time() - 1) * 1000})
    await client.rpush(keys.no_worker("image.resize"), b"{}", b"{}")
    conductor = Conductor(load_settings(), client)
    with structlog.testing.capture_logs() as logs:
        await conductor._warn_of_no_worker()
        await conductor._warn_of_no_worker()
        await anyio.sleep(0.25)
        await conductor._warn_of_no_worker()
    warnings = [line for line in logs if line["event"] == "no_worker"]
    assert len(warnings) == 2
    assert warnings[0]["task"] == "image.resize"
    assert warnings[0]["jobs"] == 2
    assert warnings[0]["waited"] >= 1
    await client.aclose()


def test_a_finished_job_leaves_the_heartbeats_running_count_in_the_same_step(
    stack: StackFactory, tmp_path: Path
) -> None:
    """`running` drops with the receipt, not a heartbeat later (status shows no ghost)."""
    run = stack(heartbeat_interval=2)
    run.worker("metal", 1)
    run.conductor()
    (worker,) = run.redis.smembers(run.keys.workers("metal"))
    beat = run.keys.worker("metal", worker.decode())
    run.dispatch(
        write_manifest(tmp_path / "beat_01.jsonl", [{"task": "system.sleep", "args": [3]}])
    )
    run.wait_for(lambda: bytes(run.redis.hget(beat, "running")) == b"1", "a beat while it runs")
    run.wait_for(lambda: bool(run.receipts("beat_01")), "its receipt", timeout=10)
    assert run.receipts("beat_01")[0]["status"] == "succeeded"
    assert bytes(run.redis.hget(beat, "running")) == b"0"
    assert run.redis.ttl(beat) > 0
