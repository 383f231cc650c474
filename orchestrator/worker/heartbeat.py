"""A worker's presence: the heartbeat that announces its slots and the tasks it runs
(the conductor routes by them), the announcements between beats, and leaving by itself
when the pool's scaler released it or it was idle too long."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import __version__
from orchestrator.keys import Keys
from orchestrator.receipts import RunningCount
from orchestrator.scripts import script
from orchestrator.worker.state import WorkerState, on_the_way_out

log = structlog.get_logger("orchestrator.worker")
SHOW_RUNNING = 0.5  # seconds between looks at whether `running` changed since a write


async def announce(redis: Redis, keys: Keys, state: WorkerState) -> None:
    """Tell the conductors at once what changed (slots, running), between beats; the
    pool's capacity counters change in the same step."""
    with suppress(RedisConnectionError, RedisTimeoutError, OSError):
        await _step(redis, keys, state, "announce", state.ttl * 1000, fields={
            "slots": state.slots, "running": state.running,
            "draining": "1" if state.stopping else "",
        })  # fmt: skip


async def beat(redis: Redis, keys: Keys, state: WorkerState) -> bool:
    """One heartbeat: the worker's fields written with their TTL, the pool's capacity
    counters moved by its share in the same script (`lua/heartbeat.lua`); whether the
    pool's scaler released this worker."""
    prefetch_ms = round(state.prefetch * 1000)
    released = await _step(redis, keys, state, "beat", state.ttl * 1000, prefetch_ms, fields={
        "pool": state.pool, "worker": state.worker_id, "host": socket.gethostname(),
        "pid": os.getpid(), "slots": state.slots, "running": state.running,
        "version": __version__, "time": time.time(), "tasks": ",".join(state.tasks),
        "launch": state.launch_id, "draining": "1" if state.stopping else "",
        "idle_since": "" if state.idle_since is None else f"{state.idle_since:.3f}",
    })  # fmt: skip
    return bool(released)


async def leave(redis: Redis, keys: Keys, state: WorkerState) -> None:
    """Deregister: the heartbeat and the worker's share of the pool's capacity go
    together, and the conductors are told at once."""
    await _step(redis, keys, state, "leave")


@asynccontextmanager
async def heartbeat(
    redis: Redis, keys: Keys, interval: float, state: WorkerState
) -> AsyncIterator[None]:
    """Announce the worker's slots every `interval`; the key outlives three missed beats."""

    async def beat_once() -> None:
        released = await beat(redis, keys, state)
        state.metrics.beat()
        leave_when_due(state, released)

    async def beat_forever() -> None:
        while True:
            await anyio.sleep(interval)
            try:
                await beat_once()
            except (RedisError, OSError) as exc:  # keep the process, the key will lapse
                state.outage.failed(exc, during="heartbeat")
            except Exception as exc:
                log.warning("heartbeat_failed", error=str(exc))
            else:
                state.outage.answered()

    async def show_running() -> None:
        """`running` between beats: a job's start shows within SHOW_RUNNING s (a beat
        can be 5 s away), at most one small write per look and only on a change."""
        shown = state.running
        while True:
            await anyio.sleep(SHOW_RUNNING)
            if state.running != shown and not state.stopping:
                shown = state.running
                with suppress(RedisError, OSError):  # the heartbeat reports outages
                    await _step(
                        redis, keys, state, "announce", state.ttl * 1000,
                        fields={"running": shown},
                    )  # fmt: skip

    await beat_once()
    await redis.publish(keys.events, state.pool)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(beat_forever)
        tasks.start_soon(show_running)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
            await on_the_way_out(state, "leave", lambda: leave(redis, keys, state))


async def _step(
    redis: Redis,
    keys: Keys,
    state: WorkerState,
    what: str,
    *args: int,
    fields: Mapping[str, str | int | float] | None = None,
) -> int:
    flat = [str(part) for pair in (fields or {}).items() for part in pair]
    reply = await script(redis, "heartbeat")(
        keys=[keys.worker(state.pool, state.worker_id)],
        args=[keys.root, state.pool, state.worker_id, what, *args, *flat],
    )
    return int(reply)


def leave_when_due(state: WorkerState, released: bool) -> None:
    """Drain and leave, as on SIGTERM, when the pool's scaler released this worker or
    it was idle for `idle_exit`: the signal handler is the one way out, so that a
    release drains exactly like a stop (running jobs finish within grace_period)."""
    if state.stopping:
        return
    idle = state.idle_since is not None and state.idle_exit is not None
    if idle and time.time() - (state.idle_since or 0.0) >= (state.idle_exit or 0.0):
        log.info("worker_leaving", pool=state.pool, worker=state.worker_id, reason="idle_exit")
    elif released:
        log.info("worker_leaving", pool=state.pool, worker=state.worker_id, reason="released")
    else:
        return
    os.kill(os.getpid(), signal.SIGTERM)


def running_count(keys: Keys, state: WorkerState) -> RunningCount:
    """The heartbeat's `running` field, written with the receipt that changed it, so
    `status` never shows a job running after its receipt."""
    return RunningCount(keys.worker(state.pool, state.worker_id), state.running, state.ttl)
