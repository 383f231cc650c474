"""`orchestrator verify` against a real Redis: what a user sees (exit code, tables, the
JSON report) for batches that succeeded, failed, or are not finished yet.

Most scenarios are built by dispatching a manifest for real (nothing consumes it) and
then writing receipts, dead letters and cursor rewinds straight into Redis; one runs a
real batch through worker and conductor processes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from orchestrator.keys import Keys
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest

ECHO = {"task": "system.echo", "args": ["hi"]}


@pytest.fixture
def dispatched(run_cli: CliRunner, redis_url: str) -> Any:
    """`dispatched(name, lines)`: manifests/<name>.jsonl written and dispatched (the
    working directory is the test's own), its jobs left on the backlog."""

    def dispatch(name: str, lines: list[dict[str, Any]]) -> Path:
        Path("manifests").mkdir(exist_ok=True)
        path = write_manifest(Path("manifests") / f"{name}.jsonl", lines)
        result = run_cli("dispatch", str(path), "--backlog", "default")
        assert result.code == 0, result.err
        return path

    return dispatch


def put_receipt(
    sync_redis: redis.Redis,
    keys: Keys,
    job_id: str,
    status: str,
    *,
    pool: str = "metal",
    attempt: int = 1,
    duration: float = 0.5,
    task: str = "system.echo",
) -> dict[str, Any]:
    batch = job_id.rsplit(":", 1)[0]
    receipt = {
        "job_id": job_id, "batch": batch, "task": task, "status": status, "pool": pool,
        "worker": "w1", "attempt": attempt, "started_at": 1000.0,
        "ended_at": 1000.0 + duration, "duration": duration,
        "error": None if status == "succeeded" else "ValueError: boom",
    }  # fmt: skip
    sync_redis.hset(keys.receipts(batch), job_id, orjson.dumps(receipt))
    return receipt


def put_dead_letter(sync_redis: redis.Redis, keys: Keys, job_id: str, **fields: Any) -> None:
    letter = {"job_id": job_id, "reason": "failed", "error": "x", "at": 1.0, "payload": None}
    sync_redis.rpush(keys.dead, orjson.dumps({**letter, **fields}))


def live_conductor(sync_redis: redis.Redis, keys: Keys, conductor: str = "c1") -> None:
    """A conductor as its heartbeat shows it, without the process."""
    sync_redis.sadd(keys.conductors, conductor)
    sync_redis.set(keys.conductor(conductor), time.time(), ex=60)


def live_worker(sync_redis: redis.Redis, keys: Keys, pool: str = "metal") -> None:
    """A worker as its heartbeat shows it, without the process."""
    sync_redis.sadd(keys.workers(pool), "w1")
    sync_redis.hset(keys.worker(pool, "w1"), mapping={"worker": "w1", "slots": 1})
    sync_redis.expire(keys.worker(pool, "w1"), 60)


def lines_of(out: str) -> list[str]:
    return [" ".join(line.split()) for line in out.splitlines()]


def test_all_succeeded_batch_exits_0_and_reports_pools_durations_and_retries(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    path = dispatched("fine_01", [ECHO] * 3)
    put_receipt(sync_redis, keys, "fine_01:1", "succeeded", duration=1.0)
    put_receipt(sync_redis, keys, "fine_01:2", "succeeded", duration=2.0, attempt=3)
    put_receipt(sync_redis, keys, "fine_01:3", "succeeded", duration=3.0, pool="cloud")

    result = run_cli("verify", str(path), "--json")

    assert result.code == 0, result.err
    report = orjson.loads(result.out)
    assert report["settled"] is True
    assert report["totals"] == {
        "done": 3, "failed": 0, "dead_lettered": 0,
        "cancelled": 0, "pending": 0, "missing": 0, "total": 3
    }  # fmt: skip
    assert report["pools"] == {"cloud": {"succeeded": 1}, "metal": {"succeeded": 2}}
    assert report["durations"] == {"count": 3, "p50": 2.0, "p95": 3.0, "max": 3.0}
    assert report["retries"] == 2
    assert report["dispatch"]["complete"] is True
    assert report["jobs"]["failed"] == {"count": 0, "ids": [], "truncated": False}
    written = path.with_name("fine_01.jsonl.verify.json")
    assert orjson.loads(written.read_bytes()) == report


def test_tables_fit_80_columns_and_end_in_the_verdict(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    path = dispatched("shown_01", [ECHO, ECHO, {"task": "system.sleep", "args": [0]}])
    put_receipt(sync_redis, keys, "shown_01:1", "succeeded", duration=0.25)
    put_receipt(sync_redis, keys, "shown_01:2", "succeeded", pool="cloud", attempt=2)
    put_receipt(sync_redis, keys, "shown_01:3", "succeeded", task="system.sleep")

    result = run_cli("verify", str(path))

    assert result.code == 0, result.err
    assert max(len(line) for line in result.out.splitlines()) <= 80
    shown = lines_of(result.out)
    assert shown[0] == f"batch shown_01 · {path} · 3 jobs, all dispatched"
    assert "task done failed dead-lettered pending missing total" in shown
    assert "system.echo 2 0 0 0 0 2" in shown
    assert "system.sleep 1 0 0 0 0 1" in shown
    assert "all 3 0 0 0 0 3" in shown
    assert "system.echo 2 0.25s 0.50s 0.50s 1" in shown
    assert shown[-5:] == [
        "pools: cloud 1 succeeded; metal 2 succeeded",
        "cloud: 0.50 job-seconds",
        "metal: 0.75 job-seconds",
        "all 3 jobs succeeded",
        f"wrote {path}.verify.json",
    ]


def test_worker_time_is_summed_per_pool_and_priced_where_a_scaler_sets_a_price(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every run a receipt tells counts, whatever its outcome; a job cancelled before it
    started ran nowhere. Cost: the time over the worker's slots, at its hourly price."""
    scaler = {"price_per_worker_hour": 0.8, "slots_per_worker": 2}
    pools = [{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": scaler}]
    monkeypatch.setenv("ORCHESTRATOR_POOLS", orjson.dumps(pools).decode())
    path = dispatched("usage_01", [ECHO] * 5)
    put_receipt(sync_redis, keys, "usage_01:1", "succeeded", duration=12.0)
    put_receipt(sync_redis, keys, "usage_01:2", "succeeded", pool="cloud", duration=20.0)
    put_receipt(sync_redis, keys, "usage_01:3", "failed", pool="cloud", duration=21.2)
    put_receipt(sync_redis, keys, "usage_01:4", "retrying", pool="cloud", duration=0.5)
    put_receipt(sync_redis, keys, "usage_01:5", "cancelled", pool="", duration=0.0)

    result = run_cli("verify", str(path), "--json")

    assert result.code == 3, result.err  # job 4 runs again
    report = orjson.loads(result.out)
    assert report["pool_usage"] == {
        "cloud": {"job_seconds": 41.7, "worker_seconds": 20.85, "cost": 0.004633,
                  "price_per_worker_hour": 0.8,
                  "slots_per_worker": 2},
        "metal": {"job_seconds": 12.0, "worker_seconds": None, "cost": None,
                  "price_per_worker_hour": None,
                  "slots_per_worker": None},
    }  # fmt: skip
    assert orjson.loads(path.with_name("usage_01.jsonl.verify.json").read_bytes()) == report

    human = run_cli("verify", str(path))
    assert max(len(line) for line in human.out.splitlines()) <= 80
    shown = lines_of(human.out)
    at = shown.index("pools: cloud 1 failed, 1 succeeded; metal 1 succeeded")
    assert shown[at + 1 : at + 4] == [
        "cloud: 41.70 job-seconds = 20.85 worker-seconds, cost $0.0046 at $0.80/h",
        "metal: 12.00 job-seconds",
        "not settled: 1 pending, 0 missing of 5",
    ]


def test_partly_failed_batch_exits_1_and_lists_failed_and_dead_lettered_jobs(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    path = dispatched("mixed_01", [ECHO] * 4)
    put_receipt(sync_redis, keys, "mixed_01:1", "succeeded")
    failed = put_receipt(sync_redis, keys, "mixed_01:2", "failed", attempt=3)
    put_dead_letter(sync_redis, keys, "mixed_01:2", receipt=failed)  # as the worker writes it
    put_receipt(sync_redis, keys, "mixed_01:3", "failed")  # its dead letter purged since
    put_dead_letter(sync_redis, keys, "mixed_01:4", reason="lost")  # no receipt, no batch

    result = run_cli("verify", str(path), "--json")

    assert result.code == 1, result.err
    report = orjson.loads(result.out)
    assert report["settled"] is True
    assert report["tasks"]["system.echo"] == {
        "done": 1, "failed": 1, "dead_lettered": 2,
        "cancelled": 0, "pending": 0, "missing": 0, "total": 4,
        "retries": 2, "durations": {"count": 1, "p50": 0.5, "p95": 0.5, "max": 0.5},
    }  # fmt: skip
    assert report["jobs"]["failed"]["ids"] == ["mixed_01:3"]
    assert report["jobs"]["dead_lettered"]["ids"] == ["mixed_01:2", "mixed_01:4"]
    assert report["pools"] == {"metal": {"failed": 2, "succeeded": 1}}
    human = run_cli("verify", str(path))
    assert human.code == 1
    assert "settled with failures: 1 failed, 2 dead-lettered of 4" in lines_of(human.out)


def test_unfinished_dispatch_shows_pending_and_missing_jobs_and_exits_3(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    path = dispatched("half_01", [ECHO] * 4 + [{**ECHO, "id": "given"}])
    # Rewind to where a dispatch cut short after 3 of 5 jobs would have left it.
    sync_redis.hset(keys.batch("half_01"), "queued", 3)
    sync_redis.hdel(keys.batch("half_01"), "complete")
    put_receipt(sync_redis, keys, "half_01:1", "succeeded")
    put_receipt(sync_redis, keys, "half_01:2", "retrying")
    put_dead_letter(sync_redis, keys, "given", payload={"id": "given", "batch": "other_01"})

    result = run_cli("verify", str(path), "--json")

    assert result.code == 3, result.err
    report = orjson.loads(result.out)
    assert report["settled"] is False
    assert report["totals"] == {
        "done": 1, "failed": 0, "dead_lettered": 0,
        "cancelled": 0, "pending": 2, "missing": 2, "total": 5
    }  # fmt: skip
    assert report["jobs"]["missing"]["ids"] == ["half_01:4", "given"]
    human = lines_of(run_cli("verify", str(path)).out)
    assert human[0] == f"batch half_01 · {path} · 5 jobs, dispatch unfinished (3 queued)"
    assert "not settled: 2 pending, 2 missing of 5" in human


def test_never_dispatched_batch_is_all_missing_and_wait_does_not_hang(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    path = write_manifest(tmp_path / "idle_01.jsonl", [ECHO] * 1005)
    started = time.monotonic()

    result = run_cli("verify", str(path), "--wait", "--json")

    assert time.monotonic() - started < 2
    assert result.code == 3, result.err
    report = orjson.loads(result.out)
    assert report["dispatch"] is None
    missing = report["jobs"]["missing"]
    assert (missing["count"], len(missing["ids"]), missing["truncated"]) == (1005, 1000, True)
    assert missing["ids"][:2] == ["idle_01:1", "idle_01:2"]


def test_wait_returns_once_the_dispatch_and_the_jobs_finish(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    path = dispatched("late_01", [ECHO] * 2)
    sync_redis.hset(keys.batch("late_01"), "queued", 1)  # job 2 not dispatched yet
    sync_redis.hdel(keys.batch("late_01"), "complete")

    def finish() -> None:
        time.sleep(1.0)
        sync_redis.hset(keys.batch("late_01"), mapping={"queued": 2, "complete": 1})
        put_receipt(sync_redis, keys, "late_01:1", "succeeded")
        put_receipt(sync_redis, keys, "late_01:2", "succeeded")

    worker = threading.Thread(target=finish)
    started = time.monotonic()
    worker.start()
    try:
        result = run_cli("verify", str(path), "--wait", "--timeout", "15", "--json")
    finally:
        worker.join()

    assert result.code == 0, result.err
    assert 1.0 <= time.monotonic() - started < 5
    assert orjson.loads(result.out)["totals"]["done"] == 2


def test_wait_gives_up_after_the_timeout_with_the_pending_code(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    """Past --timeout it exits 3 with one line saying which jobs are still pending."""
    path = dispatched("stuck_01", [ECHO, ECHO, {"task": "system.sleep", "args": [0]}])
    live_conductor(sync_redis, keys)
    live_worker(sync_redis, keys)  # so nothing to warn about: the jobs are only slow
    started = time.monotonic()

    result = run_cli("verify", str(path), "--timeout", "0.6")

    assert 0.6 <= time.monotonic() - started < 3
    assert result.code == 3
    assert result.err == (
        "orchestrator: gave up waiting after 0.6 s: 3 pending (2 system.echo, 1 system.sleep), "
        "0 missing\n"
    )
    assert "not settled: 3 pending, 0 missing of 3" in lines_of(result.out)


def test_wait_without_a_conductor_warns_every_interval_until_the_timeout(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Waiting on jobs nobody will forward says so on stderr, again while it lasts."""
    path = dispatched("alone_01", [ECHO] * 5)
    live_worker(sync_redis, keys)
    monkeypatch.setattr("orchestrator.verify.wait.WARN_EVERY", 0.4)

    result = run_cli("verify", str(path), "--timeout", "1.5")

    assert result.code == 3
    *warnings, last = result.err.splitlines()
    assert set(warnings) == {
        "orchestrator: warning: 5 jobs pending but no conductor is running "
        "(start one: orchestrator conductor, or orchestrator up)"
    }
    assert 2 <= len(warnings) <= 4  # at once, then every 0.4 s (passes come every 0.5 s)
    assert last == "orchestrator: gave up waiting after 1.5 s: 5 pending (5 system.echo), 0 missing"


def test_wait_with_no_live_worker_warns_once_per_interval(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    """A worker id whose heartbeat lapsed is no worker; the warning is not repeated each pass."""
    path = dispatched("idle_02", [ECHO] * 2)
    live_conductor(sync_redis, keys)
    sync_redis.sadd(keys.workers("metal"), "killed-9")  # its heartbeat key is gone

    result = run_cli("verify", str(path), "--timeout", "1.2", "--json")

    assert result.code == 3
    assert result.err.splitlines() == [
        "orchestrator: warning: 2 jobs pending but no live worker in any pool "
        "(start one: orchestrator worker --pool NAME, or orchestrator up)",
        "orchestrator: gave up waiting after 1.2 s: 2 pending (2 system.echo), 0 missing",
    ]
    assert orjson.loads(result.out)["totals"]["pending"] == 2


def test_wait_names_the_task_no_live_worker_runs(
    run_cli: CliRunner, dispatched: Any, sync_redis: redis.Redis, keys: Keys
) -> None:
    """Jobs the conductor parked for want of a worker with their task are named by task."""
    path = dispatched("parked_01", [ECHO, ECHO, {"task": "system.sleep", "args": [0]}])
    live_conductor(sync_redis, keys)
    live_worker(sync_redis, keys)
    sync_redis.zadd(keys.no_worker_tasks, {"system.echo": time.time() * 1000})

    result = run_cli("verify", str(path), "--timeout", "0.3")

    assert result.code == 3
    assert result.err.splitlines()[0] == (
        "orchestrator: warning: 2 jobs of system.echo pending but no live worker runs it "
        "(start a worker whose task_packages include it)"
    )


def test_real_batch_with_a_broken_task_settles_with_it_dead_lettered(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TASK_PACKAGES", '["workers.tasks", "tests.fixtures.tasks"]')
    run = stack(max_tries=2)
    run.worker("metal", 4)
    run.conductor()
    lines = [ECHO, ECHO, {"task": "image.broken", "args": []}]
    lines.append({"task": "image.flaky", "args": [str(tmp_path / "mark")]})
    path = write_manifest(tmp_path / "real_01.jsonl", lines)
    run.dispatch(path)

    result = run_cli("verify", str(path), "--wait", "--timeout", "30", "--json")

    assert result.code == 1, result.err
    report = orjson.loads(result.out)
    assert report["totals"]["done"] == 3
    assert report["jobs"]["dead_lettered"]["ids"] == ["real_01:3"]
    assert report["tasks"]["image.flaky"]["retries"] == 1
    assert report["retries"] == 2
    assert report["pools"] == {"metal": {"failed": 1, "succeeded": 3}}
    ran = [orjson.loads(r) for r in run.redis.hvals(run.keys.receipts("real_01"))]
    seconds = pytest.approx(sum(r["duration"] for r in ran), abs=1e-5)
    assert report["pool_usage"] == {  # the jobs' own run times (their last runs), summed
        "metal": {"job_seconds": seconds, "worker_seconds": None, "cost": None,
                  "price_per_worker_hour": None,
                  "slots_per_worker": None},
    }  # fmt: skip


def test_bad_manifest_is_one_line_and_exit_2(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    path = write_manifest(tmp_path / "bad_01.jsonl", [ECHO, {"task": "system.slep", "args": []}])

    result = run_cli("verify", str(path))

    assert result.code == 2
    assert result.err.startswith(f"orchestrator: error: {path}:2: task: unknown task")
    assert result.err.count("\n") == 1
    assert result.out == ""


def test_manifest_changed_since_dispatch_is_refused(run_cli: CliRunner, dispatched: Any) -> None:
    path = dispatched("edited_01", [ECHO])
    with path.open("ab") as file:
        file.write(orjson.dumps(ECHO) + b"\n")

    result = run_cli("verify", str(path))

    assert result.code == 2
    assert "is not what batch 'edited_01' was dispatched from" in result.err
    assert "--batch NAME" in result.err


def test_unreachable_redis_exits_69(run_cli: CliRunner, tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "offline_01.jsonl", [ECHO])

    result = run_cli("verify", str(path))

    assert result.code == 69
    assert result.err.startswith("orchestrator: error: cannot reach Redis")
