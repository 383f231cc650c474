"""`orchestrator dlq` against a real Redis: what a user sees, and what is left in the
dead-letter list, the ready list and arq's keys afterwards."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from orchestrator import arq_jobs
from orchestrator.keys import Keys
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest


def envelope(job_id: str, task: str = "system.echo", **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "batch": "b_01", "task": task, "args": [1], "dispatched_at": 1.0, **extra}


def record(
    job_id: str | None,
    reason: str = "failed",
    *,
    error: str = "ValueError: always broken",
    ago: float = 300,
    payload: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    if payload is None and reason not in ("lost", "invalid_payload"):
        payload = envelope(job_id or "?")
    return {
        "job_id": job_id, "reason": reason, "error": error, "at": time.time() - ago,
        "payload": payload, **extra,
    }  # fmt: skip


def push(sync_redis: redis.Redis, keys: Keys, *records: dict[str, Any]) -> None:
    sync_redis.rpush(keys.dead, *(orjson.dumps(r) for r in records))


def dead(sync_redis: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in sync_redis.lrange(keys.dead, 0, -1)]


def arq_keys(keys: Keys, job_id: str) -> list[str]:
    return arq_jobs.run_keys(keys.arq_job_id(job_id))


BAD_PAYLOAD = record(None, "invalid_payload", error="payload: Invalid JSON", payload="not json")


# --- list and show ----------------------------------------------------------------------


def test_list_shows_one_line_per_record_newest_last_within_100_columns(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    long_error = "RuntimeError: " + "very long message " * 20
    push(
        sync_redis,
        keys,
        record("b_01:1", ago=2 * 3600),
        BAD_PAYLOAD,
        record("b_01:3", error=long_error, ago=180),
    )
    result = run_cli("dlq", "list")
    assert result.code == 0, result.err
    header, columns, *rows = result.out.splitlines()
    assert header == "3 dead letters, newest last"
    assert columns.split() == ["JOB", "REASON", "WHEN", "ERROR"]
    assert [row.split()[:2] for row in rows] == [
        ["b_01:1", "failed"],
        [rows[1].split()[0], "invalid_payload"],
        ["b_01:3", "failed"],
    ]
    assert rows[1].startswith("@")  # no job id: a handle to name it by
    assert [row.split()[2:4] for row in (rows[0], rows[2])] == [["2h", "ago"], ["3m", "ago"]]
    assert all(len(line) <= 100 for line in result.out.splitlines())
    assert len(rows[2]) == 100  # the error cut to fit
    assert rows[2].endswith("  RuntimeError: very long message very long message very long mes…")


def test_list_limit_keeps_the_newest_and_json_gives_the_records(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    push(sync_redis, keys, record("b_01:1"), record("b_01:2"), record("b_01:3"))
    limited = run_cli("dlq", "list", "--limit", "2")
    assert limited.out.splitlines()[0] == "3 dead letters, newest last (the newest 2 shown)"
    assert [row.split()[0] for row in limited.out.splitlines()[2:]] == ["b_01:2", "b_01:3"]
    listed = orjson.loads(run_cli("dlq", "list", "--json").out)
    assert [r["job_id"] for r in listed] == ["b_01:1", "b_01:2", "b_01:3"]
    assert listed[0]["payload"] == envelope("b_01:1")
    assert run_cli("dlq", "list", "--json", "--limit", "1").out.count('"job_id"') == 1


def test_list_of_an_empty_dead_letter_list_says_so(run_cli: CliRunner, redis_url: str) -> None:
    assert run_cli("dlq", "list").out == "no dead letters\n"


def test_show_prints_the_whole_record_and_an_unknown_id_is_one_line_exit_2(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    receipt = {"job_id": "b_01:1", "status": "failed", "attempt": 3, "error": "boom"}
    stored = record("b_01:1", error="boom", receipt=receipt)
    push(sync_redis, keys, stored, record("b_01:2"))
    shown = run_cli("dlq", "show", "b_01:1")
    assert shown.code == 0, shown.err
    first, *body = shown.out.splitlines()
    assert first.startswith("b_01:1: failed, 5m ago (")
    assert orjson.loads("\n".join(body)) == stored
    assert '\n  "receipt": {\n' in shown.out  # pretty, not one long line
    assert orjson.loads(run_cli("dlq", "show", "b_01:1", "--json").out) == stored
    missing = run_cli("dlq", "show", "b_01:9")
    assert (missing.code, missing.out) == (2, "")
    assert missing.err == "orchestrator: error: b_01:9: not in the dead-letter list\n"


# --- purge ------------------------------------------------------------------------------


def test_purge_without_yes_off_a_terminal_is_refused_and_with_yes_deletes_all(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(sync_redis, keys, record("b_01:1"), BAD_PAYLOAD, record("b_01:3"))
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # a pipe, not a terminal
    refused = run_cli("dlq", "purge")
    assert refused.code == 2
    assert refused.err == (
        "orchestrator: error: dlq purge: not purging 3 dead letters without --yes "
        "(stdin is not a terminal)\n"
    )
    assert sync_redis.llen(keys.dead) == 3
    purged = run_cli("dlq", "purge", "--yes")
    assert (purged.code, purged.out) == (0, "purged 3 dead letters\n")
    assert sync_redis.llen(keys.dead) == 0
    assert run_cli("dlq", "purge", "--yes").out == "no dead letters to purge\n"
    assert run_cli("dlq", "requeue", "--all").out == "no dead letters to requeue\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "left"), [("y\n", 0), ("n\n", 2), ("", 2)])
def test_purge_on_a_terminal_asks_first(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    left: int,
) -> None:
    push(sync_redis, keys, record("b_01:1"), record("b_01:2"))
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    result = run_cli("dlq", "purge")
    assert "purge all 2 dead letters? [y/N]" in result.err
    assert result.code == (0 if left == 0 else 1)
    assert sync_redis.llen(keys.dead) == left


def test_purge_of_named_ids_deletes_only_those(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    push(sync_redis, keys, record("b_01:1"), BAD_PAYLOAD, record("b_01:3"))
    handle = run_cli("dlq", "list").out.splitlines()[3].split()[0]
    result = run_cli("dlq", "purge", handle, "b_01:3", "b_01:9")
    assert (result.code, result.out) == (0, "purged 2 dead letters\n")
    assert result.err == "orchestrator: b_01:9: not in the dead-letter list\n"
    assert [r["job_id"] for r in dead(sync_redis, keys)] == ["b_01:1"]


# --- requeue ----------------------------------------------------------------------------


def test_requeue_moves_the_envelope_to_ready_and_clears_arqs_keys_for_the_id(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    paid = envelope("b_01:1", meta={"max_tries": 2}, rate_paid=True)
    push(sync_redis, keys, record("b_01:1", payload=paid), record("b_01:2"))
    left = [k for k in arq_keys(keys, "b_01:1") if not k.startswith(arq_jobs.JOB_KEY_PREFIX)]
    for key in left:  # arq's result, try counter, in-progress claim: all would stop a rerun
        sync_redis.set(key, b"left by the failed run")
    receipt = {"job_id": "b_01:1", "batch": "b_01", "status": "failed", "error": "boom"}
    sync_redis.hset(keys.receipts("b_01"), "b_01:1", orjson.dumps(receipt))
    result = run_cli("dlq", "requeue", "b_01:1")
    assert result.code == 0, result.err
    # `verify` sees the job pending again until its rerun writes the next receipt
    stored = orjson.loads(sync_redis.hget(keys.receipts("b_01"), "b_01:1"))
    assert stored == {**receipt, "status": "retrying"}
    assert result.out.splitlines()[0] == "requeued b_01:1 (system.echo)"
    (ready,) = sync_redis.lrange(keys.ready, 0, -1)
    assert orjson.loads(ready) == envelope("b_01:1", meta={"max_tries": 2})  # no rate_paid
    assert b" " not in ready  # compact, like every envelope on Redis
    assert sync_redis.exists(*arq_keys(keys, "b_01:1")) == 0
    assert [r["job_id"] for r in dead(sync_redis, keys)] == ["b_01:2"]
    again = run_cli("dlq", "requeue", "b_01:1")
    assert again.code == 0  # idempotent
    assert again.err == "orchestrator: b_01:1: not in the dead-letter list\n"
    assert sync_redis.llen(keys.ready) == 1


def test_requeue_of_an_invalid_payload_is_refused_and_the_others_go(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    push(sync_redis, keys, BAD_PAYLOAD, record("b_01:2"), record("b_01:3"))
    result = run_cli("dlq", "requeue", "--all")
    assert result.code == 1
    (refusal,) = result.err.splitlines()
    assert refusal.startswith("orchestrator: @")
    assert refusal.endswith(": cannot requeue: its payload is not a job envelope (invalid_payload)")
    assert "requeued b_01:2 (system.echo)\nrequeued b_01:3 (system.echo)\n" in result.out
    assert [orjson.loads(raw)["id"] for raw in sync_redis.lrange(keys.ready, 0, -1)] == [
        "b_01:2",
        "b_01:3",
    ]
    assert [r["reason"] for r in dead(sync_redis, keys)] == ["invalid_payload"]


def test_requeue_of_a_lost_job_takes_its_envelope_from_arqs_result_or_refuses(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    lost = {"error": "forwarded to metal but ended in arq without a receipt"}
    push(sync_redis, keys, record("b_01:1", "lost", **lost), record("b_01:2", "lost", **lost))
    arq_result = {"t": 1, "f": "system.echo", "a": [envelope("b_01:1")], "k": {}, "s": False}
    result_key = arq_jobs.RESULT_KEY_PREFIX + keys.arq_job_id("b_01:1")
    sync_redis.set(result_key, orjson.dumps(arq_result))
    result = run_cli("dlq", "requeue", "b_01:1", "b_01:2")
    assert result.code == 1
    assert "requeued b_01:1 (system.echo)" in result.out
    assert result.err == (
        "orchestrator: b_01:2: cannot requeue: lost, and arq kept no copy of its envelope: "
        "dispatch the job anew (in another batch), then purge this record\n"
    )
    assert [orjson.loads(raw) for raw in sync_redis.lrange(keys.ready, 0, -1)] == [
        envelope("b_01:1")
    ]
    assert not sync_redis.exists(result_key)
    assert [r["job_id"] for r in dead(sync_redis, keys)] == ["b_01:2"]


def test_requeue_leaves_a_job_arq_still_holds(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    push(sync_redis, keys, record("b_01:1"))
    sync_redis.set(arq_jobs.JOB_KEY_PREFIX + keys.arq_job_id("b_01:1"), b"a worker finishing it")
    result = run_cli("dlq", "requeue", "b_01:1")
    assert result.code == 1
    assert "arq still holds the job; try again in a moment" in result.err
    assert sync_redis.llen(keys.ready) == 0
    assert sync_redis.llen(keys.dead) == 1


def test_requeue_needs_ids_or_all(run_cli: CliRunner, redis_url: str) -> None:
    assert run_cli("dlq", "requeue").code == 2
    assert run_cli("dlq", "requeue", "x:1", "--all").code == 2


def test_requeued_job_runs_again_through_the_conductor_and_succeeds(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    run = stack(max_tries=1, idle_block=0.5)
    run.worker("metal", 2)
    run.conductor()
    line = {"task": "image.flaky", "args": [str(tmp_path / "mark")]}
    run.dispatch(write_manifest(tmp_path / "flaky_01.jsonl", [line]))
    (failed,) = run.wait_for_receipts("flaky_01", 1)
    assert failed["status"] == "failed"
    # The dead letter is written just before arq finishes the job; requeue waits for
    # that (a user would be told to try again in a moment).
    arq_job = arq_jobs.JOB_KEY_PREFIX + run.keys.arq_job_id("flaky_01:1")
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "the dead letter")
    run.wait_for(lambda: not run.redis.exists(arq_job), "arq to finish the job")

    result = run_cli("dlq", "requeue", "flaky_01:1")
    assert result.code == 0, result.err
    assert result.out.startswith("requeued flaky_01:1 (image.flaky)\n")
    run.wait_for(
        lambda: run.receipts("flaky_01")[0]["status"] == "succeeded", "the rerun's receipt"
    )
    (receipt,) = run.receipts("flaky_01")
    assert (receipt["status"], receipt["attempt"]) == ("succeeded", 1)
    assert run.redis.llen(run.keys.dead) == 0
    assert run.redis.llen(run.keys.ready) == 0
    assert run_cli("dlq", "list").out == "no dead letters\n"


def test_a_job_with_two_records_is_shown_newest_and_requeued_once(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    # Failed, then (recovered and run again by a peer) lost: the lost record has no
    # payload, so the envelope comes from the older one.
    push(sync_redis, keys, record("b_01:1", ago=600), record("b_01:1", "lost", ago=60))
    shown = run_cli("dlq", "show", "b_01:1")
    assert shown.out.startswith("b_01:1: lost, 1m ago")
    assert shown.err == "orchestrator: b_01:1: 1 older record too; see `dlq list`\n"
    result = run_cli("dlq", "requeue", "b_01:1")
    assert result.code == 0, result.err
    assert [orjson.loads(raw) for raw in sync_redis.lrange(keys.ready, 0, -1)] == [
        envelope("b_01:1")
    ]
    assert sync_redis.llen(keys.dead) == 0


def test_requeue_of_an_unknown_task_no_worker_runs_says_so_and_leaves_it_dead(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    """Requeued, it would wait for a worker forever (parked, a warning a minute): it stays
    dead until a live worker announces its task, then it goes."""
    unknown = record("b_01:1", "unknown_task", payload=envelope("b_01:1", task="image.process"))
    push(sync_redis, keys, unknown)
    refused = run_cli("dlq", "requeue", "b_01:1")
    assert refused.code == 1
    assert refused.err.count("\n") == 1
    assert "b_01:1: cannot requeue: no live worker runs task 'image.process'" in refused.err
    assert [r["job_id"] for r in dead(sync_redis, keys)] == ["b_01:1"]
    assert sync_redis.llen(keys.ready) == 0
    # a worker that runs it comes up (as its heartbeat announces it in the pool's counters)
    sync_redis.hset(keys.holders, "w-1", "metal")
    sync_redis.hset(keys.capacity("metal"), "tasks:image.process,system.echo", 1)
    went = run_cli("dlq", "requeue", "b_01:1")
    assert went.code == 0, went.err
    assert sync_redis.llen(keys.ready) == 1
    assert dead(sync_redis, keys) == []


def test_a_requeue_keeps_the_failed_runs_receipt_among_the_jobs_earlier_runs(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys
) -> None:
    """The rerun's receipt replaces the failed one: that one goes to the job's earlier
    runs (the dashboard's job page lists them), as a retry's receipt does."""
    failed = {"job_id": "b_01:1", "batch": "b_01", "task": "system.echo", "status": "failed",
              "pool": "metal", "worker": "w-1", "attempt": 3, "started_at": 1.0,
              "ended_at": 2.0, "duration": 1.0, "error": "ValueError: always broken"}  # fmt: skip
    sync_redis.hset(keys.receipts("b_01"), "b_01:1", orjson.dumps(failed))
    push(sync_redis, keys, record("b_01:1", receipt=failed))
    result = run_cli("dlq", "requeue", "b_01:1")
    assert result.code == 0, result.err
    earlier = [
        orjson.loads(raw) for raw in sync_redis.lrange(keys.attempts("b_01", "b_01:1"), 0, -1)
    ]
    assert earlier == [failed]
    assert sync_redis.ttl(keys.attempts("b_01", "b_01:1")) > 0
    assert orjson.loads(sync_redis.hget(keys.receipts("b_01"), "b_01:1"))["status"] == "retrying"
