"""Receipts: what became of each job, written by the worker that ran it.

A batch's receipts live in one hash (job id → JSON), so `verify` reads a batch in a
few HSCANs and a re-run of the same job overwrites its receipt instead of adding a
second one. Finishing a job is one atomic step: the receipt, the pool's in-flight slot
given back, the dead letter when it failed for good, the minute's count for the
dashboard's history, and a wake-up for the conductors — and, in the worker, arq's own
end of the job (`stage`), staged as a MULTI and sent as one script call (`one_call`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired

import orjson
from redis.asyncio.client import Pipeline
from typing_extensions import TypedDict

from orchestrator import history
from orchestrator.keys import Keys

# `cancelled`: the job will not run (again) because `orchestrator cancel` said so — not a
# failure, and never retried by itself. `running` is only ever in `Keys.running`, the
# record of a run in progress: a batch's receipts are outcomes.
Status = Literal["succeeded", "failed", "retrying", "dead", "running", "cancelled"]
RESULT_LIMIT = 1024  # bytes of a task's result kept in its receipt
# Receipts of earlier runs kept per retried job (`Keys.attempts`), and for how long.
ATTEMPTS_KEPT, ATTEMPTS_TTL = 20, 7 * 86_400


class Receipt(TypedDict):
    job_id: str
    batch: str
    task: str
    status: Status
    pool: str
    worker: str
    attempt: int
    started_at: float | None  # None: cancelled before it ever started
    ended_at: float
    duration: float
    error: str | None
    result: NotRequired[Any]


class DeadLetter(TypedDict):
    """A job that will not run again by itself, with why and what it last looked like."""

    job_id: str | None
    reason: str  # failed | interrupted | invalid_args | invalid_payload | unknown_task (a bare
    # line no live worker runs) | unknown_pool | unserializable | lost
    error: str
    at: float
    payload: Any  # the envelope (parsed when it could be) or the raw text
    receipt: NotRequired[Receipt]


def result_summary(result: Any) -> Any:
    """The result as kept in a receipt: itself when small and JSON, else a truncated text."""
    try:
        encoded = orjson.dumps(result)
    except TypeError:
        return repr(result)[:RESULT_LIMIT]
    return (
        result if len(encoded) <= RESULT_LIMIT else encoded[:RESULT_LIMIT].decode(errors="replace")
    )


@dataclass(frozen=True, slots=True)
class RunningCount:
    """A worker's heartbeat key, its jobs running now, and the heartbeat's TTL."""

    key: str
    running: int
    ttl: int


def stage(
    pipe: Pipeline,
    keys: Keys,
    receipt: Receipt,
    *,
    finished: bool,
    dead: DeadLetter | None = None,
    arq_job_id: str | None = None,
    running: RunningCount | None = None,
    cancelled: bytes | None = None,
) -> None:
    """Add to a MULTI the writing of a receipt; when the job is `finished` (succeeded or
    dead) its slot given back.

    The run is over either way, so the worker no longer holds `arq_job_id`, and its
    heartbeat's `running` count (when given) changes in the same step. A job stopped by
    `cancel --running` keeps its envelope (`cancelled`) for `retry --cancelled`. The
    worker stages it into the MULTI where arq ends the job (`worker.arq_hooks.finish_job`):
    one round trip, and the receipt and arq's own bookkeeping never disagree.
    """
    encoded = orjson.dumps(receipt).decode()
    pipe.hset(keys.receipts(receipt["batch"]), receipt["job_id"], encoded)
    if receipt["status"] == "retrying":  # the next run's receipt replaces this one
        attempts = keys.attempts(receipt["batch"], receipt["job_id"])
        pipe.rpush(attempts, encoded)
        pipe.ltrim(attempts, -ATTEMPTS_KEPT, -1)
        pipe.expire(attempts, ATTEMPTS_TTL)
    pipe.hdel(keys.running(receipt["batch"]), receipt["job_id"])  # the run is over
    if arq_job_id is not None:
        pipe.hdel(keys.holding(receipt["worker"]), arq_job_id)
    if finished:
        pipe.zrem(keys.inflight(receipt["pool"]), receipt["job_id"])
        # the pool's completion rate and its jobs' mean length, which sizes its
        # prefetch (lua/lib/pools.lua)
        pipe.hincrby(keys.capacity(receipt["pool"]), "finished", 1)
        pipe.hincrbyfloat(keys.capacity(receipt["pool"]), "busy", receipt["duration"])
        if receipt["status"] in ("succeeded", "failed", "dead"):  # a cancel is neither
            history.stage_outcome(
                pipe, keys, receipt["pool"], receipt["status"] == "succeeded", receipt["ended_at"]
            )
    if dead is not None:
        pipe.rpush(keys.dead, orjson.dumps(dead))
    if cancelled is not None:
        pipe.hset(keys.cancelled(receipt["batch"]), receipt["job_id"], cancelled.decode())
    if running is not None:
        pipe.hset(running.key, "running", str(running.running))
        pipe.expire(running.key, running.ttl)  # never a heartbeat without its TTL
    if finished:
        pipe.publish(keys.events, receipt["pool"])


def receipt_status(raw: bytes | None) -> str | None:
    """The status of a receipt as stored, or None for none or what is not one."""
    if raw is None:
        return None
    try:
        receipt = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    status = receipt.get("status") if isinstance(receipt, dict) else None
    return status if isinstance(status, str) else None
