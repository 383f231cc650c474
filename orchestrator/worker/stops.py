"""The worker's side of `cancel`: the check before a job starts, and stopping a running
job that `cancel --running` names.

Before a run, one atomic step asks Redis whether the job was cancelled and, if not,
marks it running: as a rule the worker's claim (`lua/start_jobs.lua`), else `begin`
(`lua/begin.lua`), which also ends a cancelled job as such. A cancel that returned
before that step is seen by it, one that comes after finds the job running. Running jobs
are stopped by cancelling their task's scope; the worker learns which from the
`stop_running` hash, looked at when `cancel` publishes on the `cancels` channel and
again every heartbeat interval, so a message lost while Redis was away delays a stop but
never loses it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import anyio
import orjson
import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from orchestrator.connection import on_messages
from orchestrator.job import Job
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage
from orchestrator.receipts import Receipt
from orchestrator.scripts import script

log = structlog.get_logger("orchestrator.worker")
_BEGIN: WeakKeyDictionary[Redis, AsyncScript] = WeakKeyDictionary()


@dataclass(slots=True)
class RunningJob:
    """A job this worker runs; `scope` wraps its task, created before it starts so that
    a stop asked for at any moment takes effect (anyio cancels a scope on entry when it
    was cancelled before)."""

    batch: str
    job_id: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stopped: bool = False  # `cancel --running` stopped it: its receipt says cancelled


async def begin(
    redis: Redis,
    keys: Keys,
    envelope: Job,
    running: Receipt,
    *,
    arq_id: str,
    worker_id: str,
) -> bool:
    """True: run the job (it is now marked running). False: it was cancelled, and is now
    ended as such (receipt, slot given back) without running."""
    batch, pool = envelope["batch"], running["pool"]
    begin_script = _BEGIN.get(redis)
    if begin_script is None:  # registering hashes the script: once per connection pool
        begin_script = _BEGIN[redis] = script(redis, "begin")
    go = await begin_script(
        keys=[
            keys.running(batch), keys.inflight(pool), keys.holding(worker_id), keys.events,
        ],
        args=[
            keys.root, batch, envelope["id"], envelope["task"], orjson.dumps(envelope),
            time.time(), orjson.dumps(running), arq_id, pool,
        ],
    )  # fmt: skip
    return bool(go)


@asynccontextmanager
async def watch_for_stops(
    redis: Redis,
    keys: Keys,
    jobs: Mapping[str, RunningJob],
    interval: float,
    outage: RedisOutage,
) -> AsyncIterator[None]:
    """While inside, stop the running jobs that `cancel --running` names; a look that
    fails is `outage`'s (the process's one warning per outage)."""
    nudged = anyio.Event()

    class _Nudge:
        def set(self) -> None:
            nudged.set()

    async def watch() -> None:
        nonlocal nudged
        while True:
            with anyio.move_on_after(interval):
                await nudged.wait()
            nudged = anyio.Event()
            try:
                await stop_cancelled(redis, keys, jobs)
            except (RedisError, OSError) as exc:
                outage.failed(exc, during="cancel_check")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(on_messages, redis, keys.cancels, _Nudge())
        tasks.start_soon(watch)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


async def stop_cancelled(redis: Redis, keys: Keys, jobs: Mapping[str, RunningJob]) -> int:
    """Stop each running job whose batch, or itself, is in `stop_running`."""
    running = [job for job in list(jobs.values()) if not job.stopped]
    if not running:
        return 0
    names = [name for job in running for name in (job.batch, f"{job.batch} {job.job_id}")]
    found = await redis.hmget(keys.stop_running, names)  # type: ignore[misc]
    stopped = 0
    for index, job in enumerate(running):
        if found[2 * index] is not None or found[2 * index + 1] is not None:
            job.stopped = True
            job.scope.cancel()
            stopped += 1
            log.info("job_stopping", job_id=job.job_id, batch=job.batch, reason="cancelled")
    return stopped
