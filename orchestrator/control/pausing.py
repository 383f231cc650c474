"""Pausing a backlog (no conductor takes its jobs) or a pool (it gets no new jobs),
without stopping anything that runs.

The state is two Redis hashes, name → the time it was paused, so every conductor sees
it at once and it outlives them all: intake.lua takes nothing from a paused backlog
(dispatch still queues onto it) and counts a paused pool's free slots as 0, forward.lua
treats the pool as full, so spillover sends its work to the next pool. Pausing a pool
also takes back the jobs already forwarded into its arq queue that no worker has
claimed yet (`lua/take_back.lua`), so they run elsewhere rather than wait for the
resume; a job a worker has claimed finishes there. Each change is said on the events
channel, so that conductors waiting for work look again (and log it) at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.job import requeued
from orchestrator.keys import Keys
from orchestrator.pools import PoolSettings
from orchestrator.priority import backlog_depths
from orchestrator.scripts import script

TAKE_BACK_CHUNK = 500  # jobs read and moved per round trip

Kind = Literal["backlog", "pool"]


@dataclass(frozen=True, slots=True)
class Change:
    """What pausing or resuming one name did."""

    name: str
    changed: bool  # False: it was paused already (pause) or was not paused (resume)
    since: float | None  # when it was paused (before this call, for a resume)
    known: bool = True  # a backlog: configured or dispatched to before
    waiting: int = 0  # a backlog: jobs in it, every level
    taken_back: int = 0  # a pool: unclaimed jobs sent back to the ready list


async def paused(redis: Redis, keys: Keys, kind: Kind) -> dict[str, float]:
    """The paused backlogs or pools, with the time each was paused."""
    raw = await redis.hgetall(_hash(keys, kind))  # type: ignore[misc]  # redis-py stub
    return {name.decode(): float(at) for name, at in raw.items()}


async def pause_backlogs(
    redis: Redis, keys: Keys, names: Sequence[str], now: float, configured: Sequence[str]
) -> list[Change]:
    """Pause each backlog (names normalised by `keys.backlog_name`); idempotent."""
    changes = await _set(redis, keys, "backlog", names, now)
    dispatched = {name.decode() for name in await redis.smembers(keys.backlogs)}  # type: ignore[misc]
    depths = await backlog_depths(redis, keys, names)
    return [
        Change(
            c.name,
            c.changed,
            c.since,
            c.name in dispatched or c.name in configured or depth > 0,
            depth,
        )
        for c, depth in zip(changes, depths, strict=True)
    ]


async def pause_pools(
    redis: Redis, keys: Keys, pools: Sequence[PoolSettings], now: float
) -> list[Change]:
    """Pause each pool (configured ones: the caller checks the names) and take back its
    unclaimed jobs; idempotent (an already paused pool is swept again, which is harmless)."""
    changes = await _set(redis, keys, "pool", [pool.name for pool in pools], now)
    taken = [
        await take_back(redis, keys, pool.name, pool.queue or keys.pool_queue(pool.name))
        for pool in pools
    ]
    return [
        Change(change.name, change.changed, change.since, taken_back=count)
        for change, count in zip(changes, taken, strict=True)
    ]


async def resume(redis: Redis, keys: Keys, kind: Kind, names: Sequence[str]) -> list[Change]:
    """Resume each name; idempotent. Conductors are told at once."""
    key = _hash(keys, kind)
    async with redis.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.hget(key, name)
            pipe.hdel(key, name)
        pipe.publish(keys.events, f"resumed {kind}")
        # A resumed backlog's jobs are work to take: ring as dispatch does (the publish
        # reaches only the conductors subscribed at this instant).
        pipe.lpush(keys.doorbell, 1)
        pipe.ltrim(keys.doorbell, 0, 0)
        replies = await pipe.execute()
    return [
        Change(name, bool(deleted), float(since) if since is not None else None)
        for name, since, deleted in zip(names, replies[:-3:2], replies[1:-3:2], strict=True)
    ]


async def take_back(redis: Redis, keys: Keys, pool: str, queue: str) -> int:
    """Move the jobs of `pool`'s arq queue that no worker has claimed back onto the ready
    list; returns how many moved. The queue holds at most the pool's forwarded jobs."""
    move = script(redis, "take_back")
    moved = 0
    async for chunk in arq_jobs.queued(redis, queue, TAKE_BACK_CHUNK):
        script_keys = [queue, keys.inflight(pool), keys.ready, keys.events, keys.doorbell]
        args: list[Any] = [pool]
        for job in chunk:
            script_keys += job.take_keys
            args += [job.arq_id, job.payload, job.envelope["id"], requeued(job.envelope)]
        if chunk:
            moved += int(await move(keys=script_keys, args=args))
    return moved


async def _set(
    redis: Redis, keys: Keys, kind: Kind, names: Sequence[str], now: float
) -> list[Change]:
    """HSETNX each name: paused now, or since when it already was."""
    key = _hash(keys, kind)
    async with redis.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.hsetnx(key, name, repr(now))
            pipe.hget(key, name)
        pipe.publish(keys.events, f"paused {kind}")
        replies = await pipe.execute()
    return [
        Change(name, bool(set_now), float(since))
        for name, set_now, since in zip(names, replies[:-1:2], replies[1::2], strict=True)
    ]


def _hash(keys: Keys, kind: Kind) -> str:
    return keys.paused_backlogs if kind == "backlog" else keys.paused_pools
