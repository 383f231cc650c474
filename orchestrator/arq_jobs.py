"""The one place that knows arq's job format and key names.

The conductor writes jobs into arq queues itself — one Lua script for a whole batch
instead of a WATCH/MULTI round trip per job — so it must write exactly what
`ArqRedis.enqueue_job` would: the job under `arq:job:<id>` (serialized by arq's own
`serialize_job`, with JSON instead of pickle) and the id in the queue's sorted set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import SerializationError, serialize_job
from redis.asyncio import Redis

from orchestrator.job import Job

JOB_KEY_PREFIX = job_key_prefix
RESULT_KEY_PREFIX = result_key_prefix
IN_PROGRESS_KEY_PREFIX = in_progress_key_prefix
RETRY_KEY_PREFIX = retry_key_prefix
EXPIRES_MS = expires_extra_ms
__all__ = [
    "EXPIRES_MS",
    "IN_PROGRESS_KEY_PREFIX",
    "JOB_KEY_PREFIX",
    "RESULT_KEY_PREFIX",
    "RETRY_KEY_PREFIX",
    "Queued",
    "SerializationError",
    "arq_job_timeout",
    "envelope_in",
    "in_progress_timeout",
    "queue_score",
    "queued",
    "run_keys",
    "serialize",
]


def serialize(job: Job, enqueue_time_ms: int) -> bytes:
    """arq's payload for `job`: the task by name, the whole envelope as its one argument."""
    return serialize_job(job["task"], (job,), {}, None, enqueue_time_ms, serializer=orjson.dumps)


def envelope_in(payload: bytes | None) -> dict[str, Any] | None:
    """The envelope inside an arq job payload the conductor wrote (its one argument), or
    None when the payload is not one. Parsed by orjson, so re-encoding it is exact."""
    if payload is None:
        return None
    try:
        stored = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    args = stored.get("a") if isinstance(stored, dict) else None
    if isinstance(args, list) and args and isinstance(args[0], dict):
        return cast(dict[str, Any], args[0])
    return None


# How much earlier in a pool's queue one priority level puts a job: more than any job
# waits there, so a higher level always runs first; equal levels keep their order.
PRIORITY_STEP_MS = 86_400_000


def queue_score(enqueue_ms: int, priority: int) -> int:
    """A job's score in a pool's arq queue: arq starts the lowest score that is due.

    Above 0 each level moves the job a day earlier. Below 0 it cannot move later (arq
    would take the score for a start time and hold the job back), so levels below 0
    rank as 0 here; they are already taken last from the backlogs. A rate-limited job
    forwarded ahead of its instant is scored with that instant instead (see the top of
    lua/forward.lua).
    """
    return enqueue_ms - max(priority, 0) * PRIORITY_STEP_MS


@dataclass(frozen=True, slots=True)
class Queued:
    """A job found in a pool's arq queue: its payload as read (the scripts that take jobs
    back compare it, so a job changed meanwhile is left alone) and its envelope."""

    arq_id: str
    payload: bytes
    envelope: dict[str, Any]

    @property
    def take_keys(self) -> list[str]:
        """What a script needs to take it back (lua/lib/queued.lua): its job key, its
        in-progress claim and its try counter."""
        return [prefix + self.arq_id for prefix in (job_key_prefix, in_progress_key_prefix,
                                                    retry_key_prefix)]  # fmt: skip


async def queued(redis: Redis, queue: str, chunk: int = 200) -> AsyncIterator[list[Queued]]:
    """The jobs of a pool's arq queue (claimed ones included), `chunk` at a time: one
    ZRANGE, then one MGET of their payloads per chunk. Ids whose payload is gone or not
    an envelope the conductor wrote are skipped."""
    arq_ids = [raw.decode() for raw in await redis.zrange(queue, 0, -1)]
    for start in range(0, len(arq_ids), chunk):
        ids = arq_ids[start : start + chunk]
        payloads = await redis.mget([job_key_prefix + arq_id for arq_id in ids])
        found = []
        for arq_id, payload in zip(ids, payloads, strict=True):
            envelope = envelope_in(payload)
            if payload is not None and envelope is not None and isinstance(envelope.get("id"), str):
                found.append(Queued(arq_id, payload, envelope))
        yield found


def run_keys(arq_job_id: str) -> list[str]:
    """Every key arq keeps about one job id: the job, its result, its try counter, its
    in-progress claim. Deleting them lets the same id run afresh (a dead-letter requeue):
    otherwise arq's dedupe would drop it, or its old try count would end it at once."""
    return [
        prefix + arq_job_id
        for prefix in (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix)
    ]


# arq's job timeout is ours plus this margin, so that our own timeout always fires
# first (when arq's fires, it fails the job without our receipt or dead letter).
TIMEOUT_MARGIN = 5.0


def arq_job_timeout(job_timeout: float) -> float:
    return job_timeout + TIMEOUT_MARGIN


def in_progress_timeout(job_timeout: float) -> float:
    """How long arq's claim on a running job lives (arq: its longest timeout + 10 s)."""
    return arq_job_timeout(job_timeout) + 10
