"""One batch in detail, for the dashboard's batch page: its jobs, and what became of them
per task and per pool, from the receipts alone.

`verify` walks the manifest, which only the host that dispatched it may have; a batch
page must work from any host, so this reads what Redis holds: the batch record, every
receipt (outcomes), the runs in progress (`Keys.running`) and the batch's dead letters.
A job counts once, by the rule `status_batches` and `verify` use: a success wins, then a
dead letter, then a failed or cancelled receipt; the rest is pending. Jobs that have not
started yet have no record at all, so they are only a count (queued minus the rest).

Reading is bounded: at most `limit` receipts (a page says when it stopped short), in
HSCAN pages, so one huge batch never holds Redis for long.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from orchestrator import deadletters
from orchestrator.keys import Keys
from orchestrator.receipts import Receipt
from orchestrator.status_batches import as_int, as_time
from orchestrator.verify import quantiles

JobState = Literal["succeeded", "failed", "dead_lettered", "cancelled", "retrying", "running"]
JOB_STATES: tuple[JobState, ...] = (
    "succeeded", "failed", "dead_lettered", "cancelled", "retrying", "running",
)  # fmt: skip
LIMIT = 200_000  # receipts read for one page; beyond, the counts say they stopped short
SCAN_COUNT = 1_000  # receipts per HSCAN page


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    task: str
    state: JobState
    pool: str
    worker: str
    attempt: int
    started_at: float | None
    duration: float | None  # None while it runs
    error: str | None


@dataclass(slots=True)
class BatchDetail:
    id: str
    backlog: str
    manifest: str
    created_at: float | None
    cancelled_at: float | None
    total: int
    queued: int
    dispatched: bool
    counts: dict[str, int]  # JobState → jobs, and `pending` (queued, no outcome yet)
    tasks: dict[str, dict[str, int]]  # task → JobState → jobs
    pools: dict[str, dict[str, int]]  # pool → JobState → jobs
    durations: dict[str, float | int] | None  # of successes: count, p50, p95, max (s)
    jobs: list[JobRow] = field(default_factory=list)  # newest run first
    complete: bool = True  # False: more than LIMIT receipts, the rest not read

    def to_json(self, *, state: str | None = None, offset: int = 0, limit: int = 100) -> Any:
        """The batch as the API serves it, with one page of its jobs (of `state` only,
        when given)."""
        rows = [row for row in self.jobs if state is None or row.state == state]
        return {
            "id": self.id,
            "backlog": self.backlog,
            "manifest": self.manifest,
            "created_at": self.created_at,
            "cancelled_at": self.cancelled_at,
            "total": self.total,
            "queued": self.queued,
            "dispatched": self.dispatched,
            "counts": self.counts,
            "tasks": self.tasks,
            "pools": self.pools,
            "durations": self.durations,
            "complete": self.complete,
            "jobs": {
                "state": state,
                "total": len(rows),
                "offset": offset,
                "rows": [_row(row) for row in rows[offset : offset + limit]],
            },
        }


async def read_batch(
    redis: Redis, keys: Keys, batch: str, limit: int = LIMIT
) -> BatchDetail | None:
    """The batch, or None when no batch of that name was dispatched."""
    raw = await redis.hgetall(keys.batch(batch))  # type: ignore[misc]
    record = {k.decode(): v.decode() for k, v in raw.items()}
    if "created_at" not in record:
        return None
    receipts, complete = await _receipts(redis, keys.receipts(batch), limit)
    running = await redis.hgetall(keys.running(batch))  # type: ignore[misc]
    dead = {
        entry.record["job_id"]: entry
        for entry in await deadletters.read_all(redis, keys)
        if entry.record["job_id"] is not None and entry.batch == batch
    }
    rows: dict[str, JobRow] = {}
    for job_id, encoded in running.items():
        rows[job_id.decode()] = _job(orjson.loads(encoded), "running")
    for job_id, receipt in receipts.items():
        state = _state(receipt, job_id in dead)
        # a `retrying` receipt of a job that runs again: the run is what it is now
        if state is not None and (state != "retrying" or job_id not in rows):
            rows[job_id] = _job(receipt, state)
    for job_id, entry in dead.items():
        if job_id not in receipts and job_id not in rows:  # refused by the conductor
            rows[job_id] = _dead_row(job_id, entry)
    jobs = sorted(rows.values(), key=lambda r: r.started_at or 0.0, reverse=True)
    counts = Counter(row.state for row in jobs)
    queued = as_int(record.get("queued"))
    ended = sum(counts[s] for s in ("succeeded", "failed", "dead_lettered", "cancelled"))
    tasks: dict[str, Counter[str]] = {}
    pools: dict[str, Counter[str]] = {}
    for row in jobs:
        tasks.setdefault(row.task, Counter())[row.state] += 1
        if row.pool:
            pools.setdefault(row.pool, Counter())[row.state] += 1
    return BatchDetail(
        id=batch,
        backlog=record.get("backlog", ""),
        manifest=record.get("manifest", ""),
        created_at=as_time(record.get("created_at")),
        cancelled_at=as_time(record.get("cancelled_at")),
        total=as_int(record.get("total")),
        queued=queued,
        dispatched=record.get("complete") == "1",
        counts={**{s: counts[s] for s in JOB_STATES}, "pending": max(0, queued - ended)},
        tasks={task: dict(c) for task, c in sorted(tasks.items())},
        pools={pool: dict(c) for pool, c in sorted(pools.items())},
        durations=quantiles(
            row.duration for row in jobs if row.state == "succeeded" and row.duration is not None
        ),
        jobs=jobs,
        complete=complete,
    )


async def _receipts(redis: Redis, key: str, limit: int) -> tuple[dict[str, Receipt], bool]:
    found: dict[str, Receipt] = {}
    cursor = 0
    while True:
        cursor, page = await redis.hscan(key, cursor, count=SCAN_COUNT)
        for job_id, encoded in page.items():
            found[job_id.decode()] = orjson.loads(encoded)
        if cursor == 0:
            return found, True
        if len(found) >= limit:
            return found, False


def _state(receipt: Receipt, dead: bool) -> JobState | None:
    status = receipt.get("status")
    if status == "succeeded":
        return "succeeded"
    if dead or status == "dead":
        return "dead_lettered"
    if status in ("failed", "cancelled", "retrying"):
        return status
    return None


def _job(receipt: Mapping[str, Any], state: JobState) -> JobRow:
    return JobRow(
        id=str(receipt.get("job_id", "")),
        task=str(receipt.get("task", "")),
        state=state,
        pool=str(receipt.get("pool") or ""),
        worker=str(receipt.get("worker") or ""),
        attempt=int(receipt.get("attempt") or 0),
        started_at=receipt.get("started_at"),
        duration=None if state == "running" else receipt.get("duration"),
        error=receipt.get("error"),
    )


def _dead_row(job_id: str, entry: deadletters.Entry) -> JobRow:
    payload = entry.record["payload"]
    task = payload.get("task") if isinstance(payload, dict) else None
    return JobRow(
        id=job_id,
        task=str(task or "?"),
        state="dead_lettered",
        pool="",
        worker="",
        attempt=0,
        started_at=entry.record["at"] or None,
        duration=None,
        error=f"{entry.record['reason']}: {entry.record['error']}",
    )


def _row(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "task": row.task,
        "state": row.state,
        "pool": row.pool,
        "worker": row.worker,
        "attempt": row.attempt,
        "started_at": row.started_at,
        "duration": row.duration,
        "error": row.error,
    }
