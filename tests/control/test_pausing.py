"""`orchestrator pause` and `resume`: a paused backlog is taken from by no conductor, a
paused pool gets no new jobs while its running ones finish; the state lives in Redis.

The take-back of jobs forwarded to a pool and not yet claimed is pinned on jobs written
into the pool's queue as the conductor writes them (a real worker claims its jobs too
soon to catch one unclaimed); the rest runs real conductors and workers.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from orchestrator import arq_jobs
from orchestrator.job import JOB
from orchestrator.keys import Keys
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest

BACKLOG = "backlog:default"


def ok(run_cli: CliRunner, *argv: str) -> str:
    result = run_cli(*argv)
    assert result.code == 0, result.err
    assert result.err == ""
    return result.out


def status(run_cli: CliRunner) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(ok(run_cli, "status", "--json"))
    return parsed


def test_help_and_usage_errors_are_one_line_exit_2(run_cli: CliRunner) -> None:
    for verb in ("pause", "resume"):
        shown = run_cli(verb, "--help")
        assert shown.code == 0
        assert "BACKLOG" in shown.out
        assert "--pool POOL" in shown.out
    assert "dispatch still queues onto them" in " ".join(run_cli("pause", "--help").out.split())
    unknown = "is not a configured pool (metal, cloud)"
    either = "name backlogs, or pools with --pool (not both)"
    for argv, message in (
        (("pause", "--pool", "metl"), f"pause: 'metl' {unknown}; did you mean 'metal'?"),
        (("resume", "--pool", "gpu"), f"resume: 'gpu' {unknown}"),
        (("pause",), f"pause: {either}"),
        (("resume", "stress", "--pool", "metal"), f"resume: {either}"),
    ):
        result = run_cli(*argv)  # refused before any Redis is asked (REDIS_URL unreachable)
        assert (result.code, result.out, result.err) == (2, "", f"orchestrator: error: {message}\n")
    bad = run_cli("pause", "no spaces")
    assert bad.code == 2
    assert "invalid backlog name" in bad.err


def test_pause_and_resume_are_idempotent_say_so_and_show_in_status(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    assert (
        ok(run_cli, "pause", "stress")
        == "paused backlog:stress (nothing was dispatched to it yet)\n"
    )
    assert ok(run_cli, "pause", "backlog:stress") == "backlog:stress was already paused (for 0s)\n"
    path = write_manifest(tmp_path / "held_01.jsonl", [{"task": "system.echo", "args": []}] * 3)
    ok(run_cli, "dispatch", str(path), "--backlog", "stress", "--priority", "2")  # still queues
    assert (
        ok(run_cli, "pause", BACKLOG)
        == "paused backlog:default: 0 jobs wait there until it is resumed\n"
    )
    assert ok(run_cli, "pause", "--pool", "metal") == (
        "paused pool metal: no new jobs go there, its running jobs finish\n"
    )
    assert ok(run_cli, "pause", "--pool", "metal").startswith("pool metal was already paused (for ")

    document = status(run_cli)
    backlogs = {b["name"]: b for b in document["backlogs"]}
    assert backlogs["backlog:stress"]["depth"] == 3
    assert backlogs["backlog:stress"]["paused_at"] == float(
        sync_redis.hget(keys.paused_backlogs, "backlog:stress") or 0
    )
    assert backlogs[BACKLOG]["paused_at"] is not None
    pools = {p["name"]: p for p in document["pools"]}
    assert pools["metal"]["paused_at"] is not None
    assert pools["cloud"]["paused_at"] is None
    shown = run_cli("status").out
    assert "stress 3 (priority +2: 3) PAUSED" in shown
    assert "metal paused" in shown

    # how long it was paused: whole seconds, however slow the machine is today
    assert re.fullmatch(
        r"resumed backlog:stress \(paused for \d+s\)\n"
        r"resumed backlog:default \(paused for \d+s\)\n",
        ok(run_cli, "resume", "stress", BACKLOG),
    )
    assert ok(run_cli, "resume", "stress") == "backlog:stress was not paused\n"
    assert re.fullmatch(
        r"resumed pool metal \(paused for \d+s\)\npool cloud was not paused\n",
        ok(run_cli, "resume", "--pool", "metal", "cloud"),
    )
    assert not sync_redis.exists(keys.paused_backlogs, keys.paused_pools)
    assert all(b["paused_at"] is None for b in status(run_cli)["backlogs"])


def forward(sync_redis: redis.Redis, keys: Keys, job_id: str) -> tuple[str, dict[str, Any]]:
    """A job in metal's arq queue as the conductor puts it there; its arq id and envelope."""
    envelope: dict[str, Any] = {
        "id": job_id, "batch": "tb_01", "task": "system.echo", "args": [job_id],
        "dispatched_at": 1.0, "rate_paid": True,
    }  # fmt: skip
    arq_id, now_ms = keys.arq_job_id(job_id), int(time.time() * 1000)
    sync_redis.set(
        arq_jobs.JOB_KEY_PREFIX + arq_id, arq_jobs.serialize(JOB.validate_python(envelope), now_ms)
    )
    sync_redis.set(arq_jobs.RETRY_KEY_PREFIX + arq_id, 1)
    sync_redis.zadd(keys.pool_queue("metal"), {arq_id: now_ms})
    sync_redis.zadd(keys.inflight("metal"), {job_id: now_ms})
    return arq_id, envelope


def test_pausing_a_pool_takes_back_the_jobs_no_worker_has_claimed(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    (first, one), (claimed, _), (third, three) = (
        forward(sync_redis, keys, job_id) for job_id in ("tb_01:1", "tb_01:2", "tb_01:3")
    )
    sync_redis.set(arq_jobs.IN_PROGRESS_KEY_PREFIX + claimed, 1)  # a worker started it

    out = ok(run_cli, "pause", "--pool", "metal")
    assert out == (
        "paused pool metal: no new jobs go there, its running jobs finish; "
        "2 jobs it had not started went back in line to run elsewhere\n"
    )
    ready = [orjson.loads(raw) for raw in sync_redis.lrange(keys.ready, 0, -1)]
    del one["rate_paid"], three["rate_paid"]
    assert ready == [one, three]  # in queue order, whole, without their paid rate limits
    assert sync_redis.zrange(keys.pool_queue("metal"), 0, -1) == [claimed.encode()]
    assert sync_redis.zrange(keys.inflight("metal"), 0, -1) == [b"tb_01:2"]
    for arq_id in (first, third):
        assert not sync_redis.exists(
            arq_jobs.JOB_KEY_PREFIX + arq_id, arq_jobs.RETRY_KEY_PREFIX + arq_id
        )
    assert sync_redis.exists(arq_jobs.JOB_KEY_PREFIX + claimed)
    assert ok(run_cli, "pause", "--pool", "metal").startswith("pool metal was already paused")


def test_a_paused_backlog_keeps_its_jobs_across_a_conductor_restart_and_runs_on_resume(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    run = stack()
    run.worker("metal", 2)
    conductor = run.conductor()
    ok(run_cli, "pause", BACKLOG)
    run.wait_for(lambda: bool(run.events(conductor, "paused")), "the conductor to see the pause")
    assert run.events(conductor, "paused")[0]["backlog"] == BACKLOG
    ok(
        run_cli,
        "dispatch",
        str(write_manifest(tmp_path / "held_01.jsonl", [{"task": "system.echo", "args": []}] * 4)),
        "--backlog",
        BACKLOG,
    )

    def untouched() -> None:
        assert run.receipts("held_01") == []
        assert run.redis.llen(run.keys.backlog(BACKLOG)) == 4

    time.sleep(1.5)  # three heartbeats, a few dozen intake rounds
    untouched()
    conductor.send_signal(signal.SIGTERM)
    assert conductor.wait(15) == 0
    restarted = run.conductor()
    run.wait_for(
        lambda: bool(run.events(restarted, "paused")), "the new conductor to log the pause"
    )
    time.sleep(1.0)
    untouched()

    assert ok(run_cli, "resume", BACKLOG).startswith("resumed backlog:default (paused for ")
    receipts = run.wait_for_receipts("held_01", 4, timeout=10)
    assert {r["status"] for r in receipts} == {"succeeded"}
    assert [e["backlog"] for e in run.events(restarted, "resumed")] == [BACKLOG]


def test_pausing_metal_mid_batch_sends_the_rest_to_cloud_while_its_running_jobs_finish(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    run = stack()
    run.worker("metal", 2)
    run.worker("cloud", 2)
    conductor = run.conductor()
    sleepers = [{"task": "system.sleep", "args": [1.5]}] * 8
    ok(
        run_cli,
        "dispatch",
        str(write_manifest(tmp_path / "mid_01.jsonl", sleepers)),
        "--backlog",
        BACKLOG,
    )

    def metal_busy() -> bool:
        running = run.redis.hvals(run.keys.running("mid_01"))  # runs in progress
        return [orjson.loads(r)["pool"] for r in running].count("metal") == 2

    run.wait_for(metal_busy, "two jobs running on metal", timeout=10)
    ok(run_cli, "pause", "--pool", "metal")
    paused_at = float(run.redis.hget(run.keys.paused_pools, "metal") or 0)
    receipts = run.wait_for_receipts("mid_01", 8, timeout=20)

    assert {r["status"] for r in receipts} == {"succeeded"}
    metal = [r for r in receipts if r["pool"] == "metal"]
    assert len(metal) == 2  # none started on metal after the pause …
    assert all(r["started_at"] < paused_at < r["ended_at"] for r in metal)  # … these finished
    assert sum(r["pool"] == "cloud" for r in receipts) == 6
    assert [e["pool"] for e in run.events(conductor, "paused")] == ["metal"]
