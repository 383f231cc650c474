"""`orchestrator cancel` and `orchestrator retry` end to end: real conductor and worker
processes, a real Redis, the commands run as a user runs them.

What is asserted is what a user relies on: after `cancel` returns no job of the batch
starts (receipt start times), every job that had not finished says `cancelled`, other
batches run untouched, and `retry` brings a batch back to `verify` exit 0.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from orchestrator.receipts import Receipt
from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest


def orchestrator(run: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run.command(*args)


def sleep(seconds: float, **meta: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"task": "system.sleep", "args": [seconds]}
    if meta:
        line["meta"] = meta
    return line


def fake_worker(run: Stack, pool: str, slots: int) -> str:
    """A heartbeat with no process behind it: jobs forwarded to it wait in the pool's
    arq queue, unclaimed, for as long as the test wants."""
    run.redis.hset(run.keys.worker(pool, "fake"), mapping={"slots": slots, "running": 0})
    run.redis.sadd(run.keys.workers(pool), "fake")
    return "fake"


def drop_fake_worker(run: Stack, pool: str) -> None:
    run.redis.delete(run.keys.worker(pool, "fake"))
    run.redis.srem(run.keys.workers(pool), "fake")


def test_cancel_reaches_every_place_a_job_waits_and_nothing_starts_after(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(rate_limits={"slow": {"rate": 0.05, "burst": 1}})
    run.worker("metal", 2)
    fake_worker(run, "cloud", 5)
    conductor = run.conductor()
    doomed = (
        [sleep(6), sleep(6)]  # run on metal
        + [sleep(0.1, pool="metal") for _ in range(5)]  # wait for metal, which is full
        + [sleep(0.1, rate_limit=["slow"]) for _ in range(5)]  # 1 forwarded, 4 deferred
        + [sleep(0.1) for _ in range(188)]  # 4 to cloud's queue, the rest on the backlog
    )
    run.dispatch(write_manifest(tmp_path / "doomed_01.jsonl", doomed))
    run.dispatch(write_manifest(tmp_path / "other_01.jsonl", [sleep(0.1) for _ in range(3)]))
    run.wait_for(
        lambda: (
            run.redis.zcard(run.keys.pool_queue("cloud")) == 5
            and run.redis.zcard(run.keys.deferred) == 4
            and run.redis.llen(run.keys.waiting("metal")) == 5
            and run.redis.hlen(run.keys.running("doomed_01")) == 2
        ),
        "jobs in every place",
    )

    drop_fake_worker(run, "cloud")  # what it was given stays queued; the other batch waits
    done = orchestrator(run, "cancel", "doomed_01", "--running", "--json")
    returned = time.time()
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["removed"]["pool_queue"] == 5
    assert report["removed"]["deferred"] == 4
    assert report["removed"]["waiting"] == 5
    assert report["removed"]["backlog"] >= 180
    assert report["stopped"] == 2
    assert report["cancelled"] == 198

    other = run.wait_for_receipts("other_01", 3)
    assert [r["status"] for r in other] == ["succeeded"] * 3
    receipts = run.receipts("doomed_01")
    assert len(receipts) == 200
    assert {r["status"] for r in receipts} == {"cancelled"}
    started = [r["started_at"] for r in receipts if r["started_at"] is not None]
    assert len(started) == 2  # the two stopped while running
    assert max(started) < returned
    assert not run.redis.zcard(run.keys.inflight("metal"))
    assert not run.redis.zcard(run.keys.inflight("cloud"))

    verified = orchestrator(run, "verify", str(tmp_path / "doomed_01.jsonl"), "--json")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    totals = orjson.loads(verified.stdout)["totals"]
    assert totals["cancelled"] == 200
    assert totals["failed"] == totals["pending"] == 0

    again = orchestrator(run, "cancel", "doomed_01", "--json")
    assert again.returncode == 0
    assert orjson.loads(again.stdout)["already_cancelled"] == ["doomed_01"]
    assert orjson.loads(again.stdout)["cancelled"] == 0
    assert run.events(conductor, "cancelled") or report["removed"]["taken"] == 0


def test_without_running_a_running_job_finishes_and_the_rest_never_start(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack()
    run.worker("metal", 1)
    run.conductor()
    # long enough that the first is still running when `cancel` (a new process, slow to
    # start on a loaded machine) looks: else the second one runs, and 2 are cancelled
    run.dispatch(write_manifest(tmp_path / "half_01.jsonl", [sleep(5) for _ in range(4)]))
    run.wait_running("half_01", 1)
    done = orchestrator(run, "cancel", "half_01")
    returned = time.time()
    assert done.returncode == 0, done.stderr
    assert "cancelled 3 jobs" in done.stdout
    assert "1 job running left to finish" in done.stdout
    run.wait_for(
        lambda: sum(r["status"] == "succeeded" for r in run.receipts("half_01")) == 1, "the run"
    )
    time.sleep(1)
    statuses = sorted(r["status"] for r in run.receipts("half_01"))
    assert statuses == ["cancelled"] * 3 + ["succeeded"]
    assert all(
        r["started_at"] is None or r["started_at"] < returned for r in run.receipts("half_01")
    )


def test_cancelling_one_job_leaves_its_batch_and_a_later_reuse_of_its_id(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack()
    run.conductor()  # no worker yet: every job waits on the backlog
    lines = [{**sleep(0.1), "id": f"job-{n}"} for n in range(3)]
    run.dispatch(write_manifest(tmp_path / "first_01.jsonl", lines))

    done = orchestrator(run, "cancel", "--job", "job-1")
    assert done.returncode == 0, done.stderr
    assert "cancelled 1 job" in done.stdout
    unknown = orchestrator(run, "cancel", "--job", "no-such-job")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1
    assert "unknown job id 'no-such-job'" in unknown.stderr
    missing = orchestrator(run, "cancel", "no_such_batch")
    assert missing.returncode == 2
    assert "unknown batch 'no_such_batch'" in missing.stderr
    typo = orchestrator(run, "cancel", "frist_01")
    assert typo.returncode == 2
    assert "did you mean 'first_01'?" in typo.stderr
    assert orchestrator(run, "retry", "frist_01").returncode == 2

    # A later batch reuses the id: the earlier cancel must not touch it.
    run.dispatch(write_manifest(tmp_path / "second_01.jsonl", [lines[1]]))
    run.worker("metal", 4)
    first = run.wait_for_receipts("first_01", 2)
    assert sorted((r["job_id"], r["status"]) for r in first) == [
        ("job-0", "succeeded"), ("job-1", "cancelled"), ("job-2", "succeeded"),
    ]  # fmt: skip
    second = run.wait_for_receipts("second_01", 1)
    assert [(r["job_id"], r["status"]) for r in second] == [("job-1", "succeeded")]
    again = orchestrator(run, "cancel", "--job", "job-1", "--json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["already_finished"] == {"job-1": "succeeded"}


def test_retry_brings_failed_and_cancelled_jobs_back_to_verify_ok(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(max_tries=1)
    run.worker("metal", 4)
    run.conductor()
    lines = [sleep(0.05) for _ in range(5)] + [
        {"task": "image.flaky", "args": [str(tmp_path / f"marker-{n}")]} for n in range(3)
    ]  # each fails its first run and succeeds after
    manifest = write_manifest(tmp_path / "mixed_01.jsonl", lines)
    run.dispatch(manifest)
    run.wait_for_receipts("mixed_01", 8)
    assert orchestrator(run, "verify", str(manifest)).returncode == 1

    done = orchestrator(run, "retry", "mixed_01", "--failed")
    assert done.returncode == 0, done.stderr
    assert "requeued 3 jobs" in done.stdout
    verified = orchestrator(run, "verify", str(manifest), "--wait", "--timeout", "30")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_claim_begins_a_job_as_its_runner_records_it(stack: StackFactory, tmp_path: Path) -> None:
    """The worker's claim (lua/start_jobs.lua) marks a job running in the step that
    claims it, with the record the runner would have written: a receipt's fields."""
    run = stack()
    run.worker("metal", 2)
    run.conductor()
    dispatched = time.time()
    run.dispatch(write_manifest(tmp_path / "begun_01.jsonl", [sleep(1.5)]))
    run.wait_running("begun_01", 1)
    (raw,) = run.redis.hvals(run.keys.running("begun_01"))
    record = orjson.loads(raw)
    (worker,) = run.redis.smembers(run.keys.workers("metal"))
    assert set(record) == set(Receipt.__annotations__) - {"result"}
    assert record["job_id"] == "begun_01:1"
    assert record["batch"] == "begun_01"
    assert (record["task"], record["status"], record["pool"]) == (
        "system.sleep",
        "running",
        "metal",
    )
    assert record["worker"] == worker.decode()
    assert record["attempt"] == 1
    assert dispatched <= record["started_at"] <= time.time()
    assert record["error"] is None
    run.wait_for(lambda: not run.redis.hlen(run.keys.running("begun_01")), "its end")
    assert [r["status"] for r in run.receipts("begun_01")] == ["succeeded"]


def test_a_job_claimed_after_its_batch_was_cancelled_ends_cancelled_unrun(
    stack: StackFactory, tmp_path: Path
) -> None:
    """The race `cancel` cannot close by taking jobs back: its mark lands while a job sits
    in a pool's queue. The claim leaves such a job to begin.lua, which ends it as
    cancelled; it never runs."""
    run = stack()
    fake_worker(run, "metal", 2)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "raced_01.jsonl", [sleep(0.1), sleep(0.1)]))
    queue = run.keys.pool_queue("metal")
    run.wait_for(lambda: run.redis.zcard(queue) == 2, "both jobs in metal's queue")
    run.redis.hset(run.keys.batch("raced_01"), "cancelled_at", time.time())  # the mark alone
    drop_fake_worker(run, "metal")
    run.worker("metal", 2)
    run.wait_for(lambda: len(run.receipts("raced_01")) == 2, "both receipts")
    time.sleep(0.5)
    receipts = run.receipts("raced_01")
    assert [r["status"] for r in receipts] == ["cancelled", "cancelled"]
    assert all(r["started_at"] is None for r in receipts)
    assert not run.redis.hlen(run.keys.running("raced_01"))
    run.wait_for(lambda: not run.redis.zcard(queue), "arq's queue emptied")


def test_cancelling_jobs_parked_for_want_of_a_worker_leaves_nothing_behind(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Their task's entry in the no-worker index goes with them: no conductor warns of it
    every minute afterwards (it once did, across restarts)."""
    run = stack()
    run.env["ORCHESTRATOR_TASK_PACKAGES"] = '["workers.tasks"]'  # no image.* tasks
    run.worker("metal", 1)
    run.env["ORCHESTRATOR_TASK_PACKAGES"] = '["workers.tasks", "tests.fixtures.tasks"]'
    run.conductor()
    lines = [{"task": "image.flaky", "args": [str(tmp_path / "m")]} for _ in range(3)]
    run.dispatch(write_manifest(tmp_path / "parked_01.jsonl", lines))
    run.wait_for(lambda: run.redis.zcard(run.keys.no_worker_tasks) == 1, "the parked jobs")
    run.wait_for(lambda: run.redis.llen(run.keys.no_worker("image.flaky")) == 3, "all 3 parked")
    done = orchestrator(run, "cancel", "parked_01")
    assert done.returncode == 0, done.stderr
    assert "cancelled 3 jobs" in done.stdout
    assert run.redis.zcard(run.keys.no_worker_tasks) == 0
    assert not run.redis.exists(run.keys.no_worker("image.flaky"))
