"""A pool's capacity as counters (`lua/lib/pools.lua`): what heartbeats, drains, clean
exits and expiry do to the slots the conductor routes by, with simulated workers (their
heartbeats written by the worker's own code, no processes) and a real conductor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import orjson
import redis.asyncio

from orchestrator.conductor.rounds import Conductor
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.registry import default_registry
from orchestrator.scaling.reads import PoolReads
from orchestrator.settings import Settings, load_settings
from orchestrator.worker.heartbeat import announce, beat, leave
from orchestrator.worker.state import WorkerState

Client = redis.asyncio.Redis
TASKS = tuple(sorted(default_registry()))


def worker(name: str, slots: int, ttl: int = 60) -> WorkerState:
    return WorkerState("metal", name, slots, tasks=TASKS, ttl=ttl)


async def counted_slots(client: Client, keys: Keys) -> int:
    return int(await client.hget(keys.capacity("metal"), "slots") or 0)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Poll `check` (Redis offers nothing to wait on for these) until true, or fail."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.02)


@asynccontextmanager
async def conductor(settings: Settings, client: Client) -> AsyncIterator[Conductor]:
    running = Conductor(settings, client)
    running._hold_until = 0.0  # the simulated workers have announced themselves
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: running.run(stop=stop))
        yield running
        stop.set()


async def dispatch(client: Client, keys: Keys, path: Path, jobs: int) -> None:
    lines = b"".join(
        orjson.dumps({"task": "system.echo", "args": [n]}) + b"\n" for n in range(jobs)
    )
    await anyio.Path(path).write_bytes(lines)
    await dispatch_manifest(client, keys, path, "backlog:default", default_registry())


async def finish_all(client: Client, keys: Keys) -> int:
    """What the pool's workers do when their jobs end: the slots given back, the
    conductors told (the jobs themselves are left unrun in the pool's queue)."""
    ids = await client.zrange(keys.inflight("metal"), 0, -1)
    if ids:
        await client.zrem(keys.inflight("metal"), *ids)
        await client.publish(keys.events, "metal")
    return len(ids)


async def test_killed_heartbeats_leave_the_pools_capacity_within_one_ttl(
    redis_url: str, async_redis: Client, keys: Keys, tmp_path: Path
) -> None:
    """Ten workers of 2 slots; five stop beating: one TTL later the conductor routes by
    10 slots, not 20 — the counters forgot the dead without a scan of the fleet."""
    settings = load_settings(redis_url=redis_url, namespace=keys.namespace, idle_block=0.05)
    fleet = [worker(f"w{n}", 2, ttl=1) for n in range(10)]
    survivors, killed = fleet[:5], fleet[5:]
    for state in fleet:
        await beat(async_redis, keys, state)
    assert await counted_slots(async_redis, keys) == 20

    async def keep_beating() -> None:
        while True:
            for state in survivors:
                await beat(async_redis, keys, state)
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as beating, conductor(settings, async_redis):
        beating.start_soon(keep_beating)
        await dispatch(async_redis, keys, tmp_path / "jobs_01.jsonl", 100)
        queue = keys.pool_queue("metal")
        await eventually(lambda: has(async_redis.zcard(queue), 20), "20 forwarded", 5)
        killed_at = time.monotonic()  # their last beat was before this
        await anyio.sleep(max(0.0, killed_at + 1.3 - time.monotonic()))  # one TTL, and a bit
        assert await finish_all(async_redis, keys) == 20
        await eventually(lambda: has(async_redis.zcard(queue), 30), "10 more forwarded", 5)
        await anyio.sleep(0.5)  # no more comes: the killed workers' slots are gone
        assert await async_redis.zcard(queue) == 30
        assert await counted_slots(async_redis, keys) == 10
        assert await PoolReads(settings, async_redis, keys)._free(settings.pools[0]) == 0
        assert {m.decode() for m in await async_redis.smembers(keys.workers("metal"))} == {
            s.worker_id for s in survivors
        }
        beating.cancel_scope.cancel()
    assert not await async_redis.hexists(keys.counted("metal"), killed[0].worker_id)


async def has(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


async def test_a_drain_and_a_clean_exit_take_a_workers_slots_away_at_once(
    async_redis: Client, keys: Keys
) -> None:
    """Draining announces 0 slots and leaving deletes the heartbeat: the counters follow
    in the same step; a worker that comes back is counted again, once."""
    first, second = worker("a", 3), worker("b", 4)
    await beat(async_redis, keys, first)
    await beat(async_redis, keys, second)
    await beat(async_redis, keys, second)  # a beat again changes nothing
    assert await counted_slots(async_redis, keys) == 7
    second.slots, second.stopping = 0, 1
    await announce(async_redis, keys, second)
    assert await counted_slots(async_redis, keys) == 3
    await leave(async_redis, keys, second)
    await leave(async_redis, keys, first)
    capacity = await async_redis.hgetall(keys.capacity("metal"))
    assert capacity[b"slots"] == capacity[b"workers"] == b"0"
    assert not [field for field in capacity if field.startswith(b"tasks:")]
    await announce(async_redis, keys, first)  # gone: an announcement brings back no stub
    assert await counted_slots(async_redis, keys) == 0
    await beat(async_redis, keys, first)
    assert await counted_slots(async_redis, keys) == 3


async def test_a_heartbeat_written_by_hand_is_counted_and_its_deletion_forgotten(
    redis_url: str, async_redis: Client, keys: Keys, tmp_path: Path
) -> None:
    """A worker of an older version writes its heartbeat without the script: the
    conductor's audit counts it, and forgets it once the key is gone."""
    settings = load_settings(redis_url=redis_url, namespace=keys.namespace, idle_block=0.05)
    old = keys.worker("metal", "old")
    await async_redis.hset(old, mapping={"slots": 5, "running": 0})
    await async_redis.sadd(keys.workers("metal"), "old")
    async with conductor(settings, async_redis):
        await dispatch(async_redis, keys, tmp_path / "jobs_01.jsonl", 20)
        queue = keys.pool_queue("metal")
        await eventually(lambda: has(async_redis.zcard(queue), 5), "5 forwarded", 5)
        assert await counted_slots(async_redis, keys) == 5
        await async_redis.delete(old)
        await finish_all(async_redis, keys)

        async def forgotten() -> bool:
            return await counted_slots(async_redis, keys) == 0

        await eventually(forgotten, "the deleted heartbeat forgotten", 5)
        assert not await async_redis.hlen(keys.counted("metal"))
        await anyio.sleep(0.3)
        assert await async_redis.zcard(queue) == 5
