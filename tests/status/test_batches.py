"""How `status` counts a batch: each job once, as `verify` does, with its dead letters.

Dead letters are written here in the shapes their writers give them: a worker's (a
failed receipt and a letter naming the envelope and receipt), a conductor's (an envelope
it refused, or the raw text of one it could not parse, and no receipt), and the
reaper's (`lost`: only the job id). One test runs a real conductor that refuses jobs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio

from orchestrator.keys import Keys
from orchestrator.settings import load_settings
from orchestrator.status.snapshot import StatusReader
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest


def envelope(job_id: str, batch: str, task: str = "system.echo") -> dict[str, Any]:
    return {"id": job_id, "batch": batch, "task": task, "args": [], "dispatched_at": 1.0}


def receipt(job_id: str, batch: str, status: str) -> dict[str, Any]:
    return {"job_id": job_id, "batch": batch, "task": "system.echo", "status": status}


def seed(client: redis.Redis, keys: Keys, batch: str, total: int, receipts: dict[int, str]) -> None:
    """A dispatched batch of `total` jobs, with receipts of these statuses by line."""
    client.hset(keys.batch(batch), mapping={"total": total, "queued": total, "complete": 1})
    client.zadd(keys.batches, {batch: time.time()})
    for line, status in receipts.items():
        job_id = f"{batch}:{line}"
        record = orjson.dumps(receipt(job_id, batch, status))
        # a run in progress is not a receipt: workers record it in `Keys.running`
        client.hset(keys.running(batch) if status == "running" else keys.receipts(batch),
                    job_id, record)  # fmt: skip


def letters(batch: str) -> dict[str, bytes]:
    """One dead letter of each writer's shape, for jobs 1-4 of `batch`."""
    ids = [f"{batch}:{line}" for line in range(1, 5)]
    common = {"error": "x", "at": 1.0}
    return {
        "worker": orjson.dumps({
            "job_id": ids[0], "reason": "failed", **common, "payload": envelope(ids[0], batch),
            "receipt": receipt(ids[0], batch, "failed"),
        }),
        "unknown_task": orjson.dumps({
            "job_id": ids[1], "reason": "unknown_task", **common,
            "payload": envelope(ids[1], batch, "image.gone"),
        }),
        "invalid_payload": orjson.dumps({
            "job_id": ids[2], "reason": "invalid_payload", **common,
            "payload": orjson.dumps({**envelope(ids[2], batch), "args": 3}).decode(),
        }),
        "lost": orjson.dumps({"job_id": ids[3], "reason": "lost", **common, "payload": None}),
    }  # fmt: skip


def batches(document: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    fields = ("state", "done", "failed", "dead_lettered", "pending", "settled")
    return {b["id"]: tuple(b[f] for f in fields) for b in document["batches"]}


def test_dead_lettered_and_failed_jobs_settle_their_batch_as_failed(
    sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner
) -> None:
    """No batch stays pending for jobs that will never run, nor shows ✓ when jobs failed."""
    seed(sync_redis, keys, "good_01", 2, {1: "succeeded", 2: "succeeded"})
    # 1 failed (worker), 2-3 refused by a conductor, 4 ran once and was then lost.
    seed(sync_redis, keys, "dead_01", 5, {1: "failed", 4: "retrying", 5: "succeeded"})
    seed(sync_redis, keys, "failed_01", 2, {1: "failed", 2: "failed"})  # 2's letter purged
    seed(sync_redis, keys, "busy_01", 3, {1: "succeeded", 3: "failed"})
    sync_redis.rpush(keys.dead, *letters("dead_01").values(), letters("failed_01")["worker"])
    sync_redis.rpush(keys.dead, letters("busy_01")["worker"].replace(b"busy_01:1", b"busy_01:3"))
    sync_redis.rpush(keys.dead, b"not a record", letters("other_01")["unknown_task"])

    result = run_cli("status", "--json")

    assert result.code == 0, result.err
    document = orjson.loads(result.out)
    assert batches(document) == {
        "busy_01": ("running", 1, 0, 1, 1, False),
        "failed_01": ("failed", 0, 1, 1, 0, True),
        "dead_01": ("failed", 1, 0, 4, 0, True),
        "good_01": ("succeeded", 2, 0, 0, 0, True),
    }
    lines = run_cli("status").out.splitlines()
    shown = {line.split()[0]: line for line in lines if line.strip()}
    assert shown["dead_01"].split()[1:] == ["██▓▓▓▓▓▓▓▓", "5/5", "✗", "1", "0", "4", "0"]
    assert shown["failed_01"].split()[2:4] == ["2/2", "✗"]
    assert shown["good_01"].split()[2:4] == ["2/2", "✓"]
    assert shown["busy_01"].split()[2:] == ["2/3", "1", "0", "1", "1"]
    assert "batch progress done failed dead pending" in [" ".join(line.split()) for line in lines]


def test_cancelled_jobs_are_counted_apart_and_a_batch_of_them_settles_as_cancelled(
    sync_redis: redis.Redis, keys: Keys, run_cli: CliRunner
) -> None:
    seed(sync_redis, keys, "stop_01", 4, {1: "succeeded", 2: "cancelled", 3: "cancelled"})
    seed(sync_redis, keys, "stop_02", 3, {1: "succeeded", 2: "cancelled", 3: "running"})
    seed(sync_redis, keys, "mixed_01", 2, {1: "failed", 2: "cancelled"})  # failures win
    sync_redis.hset(keys.batch("stop_01"), "cancelled_at", "1700000000.25")
    sync_redis.hset(
        keys.receipts("stop_01"),
        "stop_01:4",
        orjson.dumps(receipt("stop_01:4", "stop_01", "cancelled")),
    )

    document = orjson.loads(run_cli("status", "--json").out)
    assert document["schema"] == 4
    by_id = {b["id"]: b for b in document["batches"]}
    fields = ("state", "done", "cancelled", "running", "pending", "settled", "cancelled_at")
    assert {id_: tuple(b[f] for f in fields) for id_, b in by_id.items()} == {
        "stop_01": ("cancelled", 1, 3, 0, 0, True, 1700000000.25),
        "stop_02": ("running", 1, 1, 1, 1, False, None),
        "mixed_01": ("failed", 0, 1, 0, 0, True, None),
    }
    lines = run_cli("status").out.splitlines()
    shown = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    assert shown["stop_01"] == ["██▒▒▒▒▒▒▒▒", "4/4", "⊘", "1", "0", "0", "3", "0"]
    assert shown["stop_02"][1:] == ["2/3", "1", "0", "0", "1", "1"]
    assert "batch progress done failed dead cancelled pending" in [
        " ".join(line.split()) for line in lines
    ]


async def test_dead_letters_are_read_in_bounded_steps_and_a_requeue_is_seen(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """A long dead-letter list costs a few reads, and a live view sees jobs sent round again."""
    client = async_redis
    await client.hset(keys.batch("dlq_01"), mapping={"total": 4, "queued": 4, "complete": 1})
    await client.zadd(keys.batches, {"dlq_01": time.time()})
    refused = list(letters("dlq_01").values())
    await client.rpush(keys.dead, *[letters("x_01")["lost"]] * 5, *refused)  # 9 letters
    failed = orjson.dumps(receipt("dlq_01:1", "dlq_01", "failed"))
    await client.hset(keys.receipts("dlq_01"), "dlq_01:1", failed)
    reader = StatusReader(client, load_settings(), dead_budget=2)

    (first,) = (await reader.read()).batches
    assert (first.counts_exact, first.settled, first.state) == (False, False, "running")
    (batch,) = (await reader.read_exact()).batches
    assert (batch.state, batch.dead_lettered, batch.failed, batch.pending) == ("failed", 4, 0, 0)

    # `dlq requeue` of two of them: their letters go, the receipt says retrying again.
    await client.lrem(keys.dead, 1, refused[0])
    await client.lrem(keys.dead, 1, refused[1])
    retrying = orjson.dumps(receipt("dlq_01:1", "dlq_01", "retrying"))
    await client.hset(keys.receipts("dlq_01"), "dlq_01:1", retrying)
    for _ in range(5):  # refreshes of a live view: 7 letters are a pass of 4 reads
        (batch,) = (await reader.read()).batches
    assert (batch.state, batch.dead_lettered, batch.retrying, batch.pending) == ("running", 2, 1, 2)


def test_jobs_a_real_conductor_refuses_leave_their_batch_settled_as_failed(
    stack: StackFactory, run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """A conductor dead-letters a payload it cannot parse, with no receipt: not pending."""
    run = stack()
    manifest = write_manifest(
        tmp_path / "refused_01.jsonl", [{"task": "system.echo", "args": []}] * 3
    )
    dispatched = run_cli("dispatch", str(manifest), "--backlog", "default")
    assert dispatched.code == 0, dispatched.err
    backlog = keys.backlog("backlog:default")
    for index in (0, 1):  # spoil two envelopes before any conductor takes them
        spoiled = {**orjson.loads(sync_redis.lindex(backlog, index)), "args": 3}
        sync_redis.lset(backlog, index, orjson.dumps(spoiled))
    run.worker("metal", 2)
    run.conductor()

    run.wait_for(lambda: sync_redis.llen(keys.dead) == 2, "2 dead letters", timeout=15)
    run.wait_for_receipts("refused_01", 1, timeout=15)
    document = orjson.loads(run_cli("status", "--json").out)

    assert batches(document) == {"refused_01": ("failed", 1, 0, 2, 0, True)}
    (row,) = [line for line in run_cli("status").out.splitlines() if "refused_01" in line]
    assert row.split()[2:] == ["3/3", "✗", "1", "0", "2", "0"]
