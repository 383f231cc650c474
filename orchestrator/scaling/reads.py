"""What the scaler reads from Redis about a pool: its launch records, its workers'
heartbeats, the workers it was told to release, and its demand.

**Demand** is what the pool would run now: the jobs it holds (forwarded, not finished),
the jobs that may only run there and wait for it (`waiting:<pool>`), and the jobs
queued in the backlogs and the ready list beyond what the pools before it have free
slots for — counting only jobs that may go to this pool at all (its rules, pins and
`spill_after`), judged on a sample from the head of each list.
"""

from __future__ import annotations

import math

import orjson
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.pools import PoolSettings
from orchestrator.routing import Router, UnknownPool
from orchestrator.scaling.launches import Launch
from orchestrator.settings import Settings

SAMPLE = 50  # jobs read from the head of each list to judge which may run on a pool


class PoolReads:
    """The scaler's reads of one namespace; none of them changes anything."""

    def __init__(self, settings: Settings, redis: Redis, keys: Keys) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.router = Router(settings)

    async def launches(self, pool: str) -> dict[str, Launch]:
        raw = await self.redis.hgetall(self.keys.launches(pool))  # type: ignore[misc]
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def workers(self, pool: str) -> list[dict[str, str]]:
        ids = sorted(m.decode() for m in await self.redis.smembers(self.keys.workers(pool)))  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(self.keys.worker(pool, worker_id))
            beats = await pipe.execute()
        return [
            {k.decode(): v.decode() for k, v in beat.items()} | {"worker": worker_id}
            for worker_id, beat in zip(ids, beats, strict=True)
            if beat
        ]

    async def released(self, pool: str) -> set[str]:
        return {m.decode() for m in await self.redis.smembers(self.keys.release(pool))}  # type: ignore[misc]

    async def demand(self, pool: PoolSettings, now: float) -> int:
        """Jobs the pool would run now (see the module docstring)."""
        keys = self.keys
        earlier = [p for p in self.settings.ordered_pools if p.order < pool.order]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.inflight(pool.name))
            pipe.llen(keys.waiting(pool.name))
            pipe.hkeys(keys.paused_backlogs)
            pipe.hkeys(keys.paused_pools)
            pipe.smembers(keys.backlogs)
            own, waiting, paused_backlogs, paused_pools, known = await pipe.execute()
        paused_pools = {p.decode() for p in paused_pools}
        if pool.name in paused_pools:
            return int(own)  # no new work goes there; keep what runs
        paused = {b.decode() for b in paused_backlogs}
        backlogs = dict.fromkeys([*self.settings.backlogs, *sorted(b.decode() for b in known)])
        lists = [keys.ready]
        for name in (b for b in backlogs if b not in paused):
            levels = await self.redis.zrange(keys.backlog_levels(name), 0, -1)
            lists += [keys.backlog_level(name, int(float(level))) for level in levels]
            lists.append(keys.backlog(name))
        queued = 0.0
        for key in lists:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(key)
                pipe.lrange(key, 0, SAMPLE - 1)
                depth, head = await pipe.execute()
            if depth:
                eligible = sum(self._may_run(raw, pool.name, now) for raw in head)
                queued += depth * eligible / len(head)
        free = 0
        for other in earlier:
            if other.name not in paused_pools:
                free += await self._free(other)
        return int(own) + int(waiting) + max(0, math.ceil(queued) - free)

    async def _free(self, pool: PoolSettings) -> int:
        """The pool's free slots as the conductors count them (`lua/lib/pools.lua`): its
        capacity counters' live slots and prefetch, less its jobs in flight."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.capacity(pool.name), ["slots", "prefetch"])
            pipe.zcard(self.keys.inflight(pool.name))
            (slots_raw, prefetch_raw), inflight = await pipe.execute()
        slots = max(0, int(slots_raw or 0))
        prefetch = max(0, min(int(prefetch_raw or 0), slots))
        free = slots + prefetch - int(inflight)
        if pool.max_in_flight:
            free = min(free, pool.max_in_flight - inflight)
        return max(0, free)

    def _may_run(self, raw: bytes, pool: str, now: float) -> bool:
        """Whether the job (an envelope, or a bare line) may be routed to `pool` now."""
        try:
            job = orjson.loads(raw)
            if not isinstance(job, dict) or not isinstance(job.get("task"), str):
                return False
            job.setdefault("dispatched_at", now)
            if not isinstance(job["dispatched_at"], int | float):
                job["dispatched_at"] = now
            return pool in self.router.route(job, now).candidates  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, UnknownPool, AttributeError, TypeError):
            return False
