"""One batch in detail, for the dashboard's batch page: its jobs, and what became of them
per task and per pool, from the receipts alone.

`verify` walks the manifest, which only the host that dispatched it may have; a batch
page must work from any host, so this reads what Redis holds: the batch record, every
receipt (outcomes), the runs in progress (`Keys.running`) and the batch's dead letters.
A job counts once, by the rule `batches` and `verify` use: a success wins, then a
dead letter, then a failed or cancelled receipt; the rest is pending. Jobs that have not
started yet have no record at all, so they are only a count (queued minus the rest).

Reading is bounded: at most `limit` receipts (a page says when it stopped short), in
HSCAN pages, so one huge batch never holds Redis for long.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from orchestrator.control import deadletters
from orchestrator.keys import Keys
from orchestrator.receipts import Receipt
from orchestrator.status.batches import as_int, as_time
from orchestrator.verify.verifier import quantiles

JobState = Literal["succeeded", "failed", "dead_lettered", "cancelled", "retrying", "running"]
JOB_STATES: tuple[JobState, ...] = (
    "succeeded", "failed", "dead_lettered", "cancelled", "retrying", "running",
)  # fmt: skip
LIMIT = 200_000  # receipts read for one page; beyond, the counts say they stopped short
SCAN_COUNT = 5_000  # receipts per HSCAN page: a few ms of Redis each


# One job as read: its id, its state, and what tells the rest (its receipt, its record in
# `Keys.running`, or for a job refused before it ran, a stand-in made of its dead letter).
# Rows for the API are made only for the page asked for: a batch of 10,000 jobs costs
# one tuple each, not one object per field.
Job = tuple[str, JobState, Mapping[str, Any]]


@dataclass(slots=True)
class BatchDetail:
    id: str
    backlog: str
    manifest: str
    created_at: float | None
    cancelled_at: float | None
    expires_at: float | None  # settled: when it leaves Redis for its archive
    total: int
    queued: int
    dispatched: bool
    counts: dict[str, int]  # JobState → jobs, and `pending` (queued, no outcome yet)
    tasks: dict[str, dict[str, int]]  # task → JobState → jobs
    pools: dict[str, dict[str, int]]  # pool → JobState → jobs
    durations: dict[str, float | int] | None  # of successes: count, p50, p95, max (s)
    jobs: list[Job] = field(default_factory=list)  # latest start first
    complete: bool = True  # False: more than LIMIT receipts, the rest not read
    fingerprint: tuple[Any, ...] = ()  # what `changed` compares

    @property
    def settled(self) -> bool:
        """Every job has its outcome: only an action (retry, requeue, cancel) changes it."""
        counts = self.counts
        return self.dispatched and not (
            counts["pending"] or counts["running"] or counts["retrying"]
        )

    def to_json(
        self,
        *,
        state: str | None = None,
        offset: int = 0,
        limit: int = 100,
        pending: Sequence[tuple[str, Mapping[str, Any]]] = (),
    ) -> Any:
        """The batch as the API serves it, with one page of its jobs (of `state` only,
        when given). `pending`: jobs that wait, as (id, where and what), listed after
        the jobs with a record (`status/waiting.py` finds them)."""
        found: list[tuple[str, str, Mapping[str, Any]]] = [
            *self.jobs,
            *((job_id, "pending", job) for job_id, job in pending),
        ]
        jobs = found if state is None else [job for job in found if job[1] == state]
        return {
            "id": self.id,
            "backlog": self.backlog,
            "manifest": self.manifest,
            "created_at": self.created_at,
            "cancelled_at": self.cancelled_at,
            "expires_at": self.expires_at,
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
                "total": len(jobs),
                "offset": offset,
                "rows": [_row(*job) for job in jobs[offset : offset + limit]],
            },
        }


async def read_again(
    redis: Redis, keys: Keys, batch: str, last: BatchDetail | None
) -> BatchDetail | None:
    """`last` when it is settled and nothing that could change it did (one cheap round
    trip, instead of reading every receipt of a big batch again); else a new read."""
    if (
        last is not None
        and last.settled
        and await _fingerprint(redis, keys, batch) == last.fingerprint
    ):
        return last
    return await read_batch(redis, keys, batch)


async def _fingerprint(redis: Redis, keys: Keys, batch: str) -> tuple[Any, ...]:
    """What changes when a settled batch does: a retry or requeue takes a dead letter
    away or lifts cancels, a cancel marks the batch, a rerun writes a run and a receipt."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hmget(keys.batch(batch), ["queued", "cancelled_at", "complete", "expires_at"])
        pipe.hlen(keys.receipts(batch))
        pipe.hlen(keys.running(batch))
        pipe.hlen(keys.cancelled(batch))
        pipe.llen(keys.dead)
        replies = await pipe.execute()
    return (tuple(replies[0]), *replies[1:])


async def read_batch(
    redis: Redis, keys: Keys, batch: str, limit: int = LIMIT
) -> BatchDetail | None:
    """The batch, or None when no batch of that name was dispatched."""
    fingerprint = await _fingerprint(redis, keys, batch)  # first: a change after it shows
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
    found: dict[str, Job] = {}
    for job_id, encoded in running.items():
        found[job_id.decode()] = (job_id.decode(), "running", orjson.loads(encoded))
    for job_id, receipt in receipts.items():
        state = _state(receipt, job_id in dead)
        # a `retrying` receipt of a job that runs again: the run is what it is now
        if state is not None and (state != "retrying" or job_id not in found):
            found[job_id] = (job_id, state, receipt)
    for job_id, entry in dead.items():
        if job_id not in receipts and job_id not in found:  # refused by the conductor
            found[job_id] = (job_id, "dead_lettered", _refused(entry))
    jobs = sorted(found.values(), key=_latest_first)
    counts = Counter(state for _, state, _ in jobs)
    by_task = Counter((str(job.get("task", "")), state) for _, state, job in jobs)
    by_pool = Counter((job.get("pool"), state) for _, state, job in jobs if job.get("pool"))
    queued = as_int(record.get("queued"))
    ended = sum(counts[s] for s in ("succeeded", "failed", "dead_lettered", "cancelled"))
    return BatchDetail(
        id=batch,
        backlog=record.get("backlog", ""),
        manifest=record.get("manifest", ""),
        created_at=as_time(record.get("created_at")),
        cancelled_at=as_time(record.get("cancelled_at")),
        expires_at=as_time(record.get("expires_at")),
        total=as_int(record.get("total")),
        queued=queued,
        dispatched=record.get("complete") == "1",
        counts={**{s: counts[s] for s in JOB_STATES}, "pending": max(0, queued - ended)},
        tasks=_nest(by_task),
        pools=_nest(by_pool),
        durations=quantiles(
            job["duration"]
            for _, state, job in jobs
            if state == "succeeded" and isinstance(job.get("duration"), int | float)
        ),
        jobs=jobs,
        complete=complete,
        fingerprint=fingerprint,
    )


def _latest_first(job: Job) -> float:
    started = job[2].get("started_at")
    return -float(started) if isinstance(started, int | float) else 0.0


def _nest(pairs: Mapping[tuple[Any, JobState], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (name, state), count in sorted(pairs.items(), key=lambda item: str(item[0][0])):
        nested.setdefault(str(name), {})[state] = count
    return nested


async def _receipts(redis: Redis, key: str, limit: int) -> tuple[dict[str, Receipt], bool]:
    found: dict[str, Receipt] = {}
    cursor = 0
    while True:
        cursor, page = await redis.hscan(key, cursor, count=SCAN_COUNT)
        # one parse of the whole page as a JSON array: a fraction of one call per receipt
        parsed = orjson.loads(b"[" + b",".join(page.values()) + b"]")
        found.update(zip((job_id.decode() for job_id in page), parsed, strict=True))
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


def _refused(entry: deadletters.Entry) -> dict[str, Any]:
    """What a dead letter tells of a job the conductor refused (it has no receipt)."""
    payload = entry.record["payload"]
    task = payload.get("task") if isinstance(payload, dict) else None
    return {
        "task": str(task or "?"),
        "started_at": entry.record["at"] or None,
        "error": f"{entry.record['reason']}: {entry.record['error']}",
    }


def _row(job_id: str, state: str, job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "where": job.get("where"),  # a pending job: the place it waits in
        "id": job_id,
        "task": str(job.get("task", "")),
        "state": state,
        "pool": str(job.get("pool") or ""),
        "worker": str(job.get("worker") or ""),
        "attempt": int(job.get("attempt") or 0),
        "started_at": job.get("started_at"),
        # none while it runs, nor for a job that never ran (cancelled before it started)
        "duration": (
            None if state == "running" or job.get("started_at") is None else job.get("duration")
        ),
        "error": job.get("error"),
    }
