"""What the live workers announce they run, read from the pools' capacity counters
(`Keys.capacity`: `tasks:<list>` → how many live workers announce that list), so that
a command can tell a user before a job waits for a worker that will never come."""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from orchestrator.keys import Keys

ANY = "*"  # announced by a worker too old to list its tasks: it may run anything


async def announced_tasks(redis: Redis, keys: Keys, pools: Iterable[str] | None = None) -> set[str]:
    """Every task some live worker announces, in `pools` (default: every pool a worker
    registered in); `ANY` among them when a worker does not list its tasks."""
    if pools is None:
        pools = {pool.decode() for pool in await redis.hvals(keys.holders)}  # type: ignore[misc]
    async with redis.pipeline(transaction=False) as pipe:
        for pool in sorted(pools):
            pipe.hgetall(keys.capacity(pool))
        counters: list[dict[bytes, bytes]] = await pipe.execute()
    announced: set[str] = set()
    for fields in counters:
        for field, count in fields.items():
            if field.startswith(b"tasks:") and int(count) > 0:
                announced.update(field.removeprefix(b"tasks:").decode().split(","))
    return announced


def runs(announced: set[str], task: str) -> bool:
    return ANY in announced or task in announced
