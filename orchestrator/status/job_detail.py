"""One job in detail, for the dashboard's job page: what it is (task, arguments), what
became of it (result or error), its runs, its receipt and its dead letters.

A job is found by its id alone (a search box) or with its batch (a link from a batch
page). Its records are spread over its batch's hashes (`Keys.receipts`,
`Keys.running`, `Keys.cancelled`), the dead letters and arq's own keys: the batch is the
one the id names (`<manifest stem>:<line>`), the one arq's copy of the envelope names,
or the newest of the recent batches that has a record of it.

Runs: a receipt is overwritten by the next run's, so the earlier runs are what the
worker kept of each run a retry followed (`Keys.attempts`) and what the dead letters
kept (each holds the receipt of the run that ended in it), beside the run in progress
and the last receipt. A run whose process died left no receipt: only its attempt
number (the next run's) tells of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.control import deadletters
from orchestrator.keys import Keys

SEARCH_BATCHES = 2_000  # newest batches searched for a job given without its batch


async def read_job(
    redis: Redis, keys: Keys, job_id: str, batch: str | None = None
) -> dict[str, Any] | None:
    """The job as the API serves it, or None when nothing in Redis names it."""
    arq_id = keys.arq_job_id(job_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(arq_jobs.JOB_KEY_PREFIX + arq_id)
        pipe.get(arq_jobs.RESULT_KEY_PREFIX + arq_id)
        queued, result = await pipe.execute()
    arq_envelope = arq_jobs.envelope_in(queued) or arq_jobs.envelope_in(result)
    letters = [
        entry for entry in await deadletters.read_all(redis, keys)
        if entry.record["job_id"] == job_id
    ]  # fmt: skip
    candidates = [batch] if batch else _guesses(job_id, arq_envelope, letters)
    found = await _records(redis, keys, job_id, candidates, guessed=True)
    if found is None and not batch:
        recent = await _recent_batches(redis, keys)
        found = await _records(redis, keys, job_id, recent, guessed=False)
    if found is None and arq_envelope is None and not letters:
        return None
    batch_id, receipt, running, cancelled = found or (candidates[0] if candidates else None,
                                                      None, None, None)  # fmt: skip
    envelope = arq_envelope or cancelled or _newest_payload(letters)
    earlier = (
        [_load(raw) for raw in await redis.lrange(keys.attempts(batch_id, job_id), 0, -1)]  # type: ignore[misc]
        if batch_id
        else []
    )
    runs = _runs(running, receipt, letters, earlier)
    state = _state(receipt, running, cancelled, letters, queued is not None)
    last = receipt or {}
    return {
        "id": job_id,
        "batch": batch_id,
        "task": (envelope or {}).get("task") or last.get("task") or _letter_task(letters),
        "state": state,
        "args": None if envelope is None else envelope.get("args"),
        "kwargs": None if envelope is None else envelope.get("kwargs", {}),
        "meta": None if envelope is None else envelope.get("meta", {}),
        "dispatched_at": None if envelope is None else envelope.get("dispatched_at"),
        "result": last.get("result"),
        "error": last.get("error") or (letters[-1].record["error"] if letters else None),
        "runs": runs,
        "receipt": receipt,
        "running": running,
        "in_arq": queued is not None,
        "dead_letters": [
            {"reason": e.record["reason"], "error": e.record["error"], "at": e.record["at"]}
            for e in letters
        ],
    }


def _guesses(
    job_id: str, envelope: dict[str, Any] | None, letters: list[deadletters.Entry]
) -> list[str]:
    guesses = [str(envelope["batch"])] if envelope and envelope.get("batch") else []
    guesses += [entry.batch for entry in letters if entry.batch]
    stem, colon, line = job_id.rpartition(":")
    if colon and line.isdigit():
        guesses.append(stem)
    return list(dict.fromkeys(guesses))


async def _recent_batches(redis: Redis, keys: Keys) -> list[str]:
    newest = await redis.zrevrange(keys.batches, 0, SEARCH_BATCHES - 1)
    return [raw.decode() for raw in newest]


Found = tuple[str, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]


async def _records(
    redis: Redis, keys: Keys, job_id: str, batches: list[str], *, guessed: bool
) -> Found | None:
    """The first of `batches` with a record of the job: (batch, receipt, run, cancelled);
    else, when the batches are the ones the job names, the first that exists (the job
    waits somewhere, not started)."""
    if not batches:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        for batch in batches:
            pipe.hget(keys.receipts(batch), job_id)
            pipe.hget(keys.running(batch), job_id)
            pipe.hget(keys.cancelled(batch), job_id)
            pipe.exists(keys.batch(batch))
        replies = await pipe.execute()
    for index, batch in enumerate(batches):
        receipt, running, cancelled, _ = replies[4 * index : 4 * index + 4]
        if receipt or running or cancelled:
            return batch, _load(receipt), _load(running), _load(cancelled)
    if guessed:
        for index, batch in enumerate(batches):
            if replies[4 * index + 3]:
                return batch, None, None, None
    return None


def _runs(
    running: dict[str, Any] | None,
    receipt: dict[str, Any] | None,
    letters: list[deadletters.Entry],
    earlier: list[dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """Every run known, latest first, each once (a dead letter repeats the receipt)."""
    seen: set[tuple[Any, Any]] = set()
    runs: list[dict[str, Any]] = []
    kept = [entry.record.get("receipt") for entry in reversed(letters)]
    for record in (running, receipt, *kept, *reversed(earlier)):
        if not isinstance(record, dict):
            continue
        mark = (record.get("attempt"), record.get("started_at"))
        if mark in seen:
            continue
        seen.add(mark)
        runs.append({
            "attempt": record.get("attempt"), "status": record.get("status", "running"),
            "pool": record.get("pool"), "worker": record.get("worker"),
            "started_at": record.get("started_at"), "ended_at": record.get("ended_at"),
            "duration": record.get("duration"), "error": record.get("error"),
        })  # fmt: skip
    return runs


def _state(
    receipt: dict[str, Any] | None,
    running: dict[str, Any] | None,
    cancelled: dict[str, Any] | None,
    letters: list[deadletters.Entry],
    in_arq: bool,
) -> str:
    """The job's state in the words of the batch page (`status/batch_detail.py`)."""
    status = (receipt or {}).get("status")
    if status == "succeeded":
        return "succeeded"
    if letters:
        return "dead_lettered"
    if running:
        return "running"
    if status in ("failed", "cancelled", "retrying"):
        return str(status)
    if cancelled:
        return "cancelled"
    return "queued" if in_arq else "pending"


def _newest_payload(letters: list[deadletters.Entry]) -> dict[str, Any] | None:
    for entry in reversed(letters):
        if isinstance(entry.record["payload"], dict):
            return entry.record["payload"]
    return None


def _letter_task(letters: list[deadletters.Entry]) -> str | None:
    payload = _newest_payload(letters)
    task = payload.get("task") if payload else None
    return task if isinstance(task, str) else None


def _load(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None
