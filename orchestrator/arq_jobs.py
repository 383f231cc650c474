"""The one place that knows arq's job format and key names.

The conductor writes jobs into arq queues itself — one Lua script for a whole batch
instead of a WATCH/MULTI round trip per job — so it must write exactly what
`ArqRedis.enqueue_job` would: the job under `arq:job:<id>` (serialized by arq's own
`serialize_job`, with JSON instead of pickle) and the id in the queue's sorted set.
"""

from __future__ import annotations

import orjson
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import SerializationError, serialize_job

from orchestrator.job import Job

JOB_KEY_PREFIX = job_key_prefix
RESULT_KEY_PREFIX = result_key_prefix
EXPIRES_MS = expires_extra_ms
__all__ = ["EXPIRES_MS", "JOB_KEY_PREFIX", "RESULT_KEY_PREFIX", "SerializationError", "serialize"]


def serialize(job: Job, enqueue_time_ms: int) -> bytes:
    """arq's payload for `job`: the task by name, the whole envelope as its one argument."""
    return serialize_job(job["task"], (job,), {}, None, enqueue_time_ms, serializer=orjson.dumps)
