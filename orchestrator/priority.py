"""A backlog's priority levels: one Redis list per level in use.

Higher levels are taken first; within a level, first in first out. A list per level
rather than one sorted set keeps every push and take O(1) and FIFO without a sequence
number, and level 0 — what producers push and nearly every job has — is the backlog's
own list, so a backlog that never uses priorities costs what it always did. The levels
in use are kept in the backlog's levels sorted set (`Keys.backlog_levels`): dispatch
adds a level in the same script that pushes onto its list, and intake removes it in the
same script that finds the list empty, so intake reads one ZRANGE per backlog instead
of probing 2,001 possible lists. The cost of a level is that list and that member, for
as long as jobs wait on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from redis.asyncio import Redis

from orchestrator.keys import Keys

_PROBE = "backlog:probe"


@cache
def level_separator(keys: Keys) -> str:
    """What stands between a backlog's list key and a level in the key of that level's
    list, for the Lua scripts that complete the keys of the levels they read.

    Checked, so that a change of layout in keys.py fails here rather than making the
    scripts read lists nobody writes."""
    base = keys.backlog(_PROBE)
    probe = keys.backlog_level(_PROBE, 7)
    separator = probe[len(base) : -1]
    if (
        not probe.startswith(base)
        or not separator
        or keys.backlog_level(_PROBE, 0) != base
        or keys.backlog_level(_PROBE, -12) != f"{base}{separator}-12"
    ):
        raise RuntimeError(f"level key {probe!r} is not <backlog><sep><level>; update the scripts")
    return separator


async def backlog_depths(redis: Redis, keys: Keys, names: Sequence[str]) -> list[int]:
    """Jobs waiting in each backlog, every level summed: one round trip, two when some
    backlog has jobs on levels other than 0."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(keys.backlog(name))
            pipe.zrange(keys.backlog_levels(name), 0, -1)
        replies = await pipe.execute()
    depths = [int(depth) for depth in replies[::2]]
    levels = [[int(level) for level in members] for members in replies[1::2]]
    if not any(levels):
        return depths
    async with redis.pipeline(transaction=False) as pipe:
        for name, used in zip(names, levels, strict=True):
            for level in used:
                pipe.llen(keys.backlog_level(name, level))
        lengths = iter(await pipe.execute())
    return [
        depth + sum(next(lengths) for _ in used) for depth, used in zip(depths, levels, strict=True)
    ]
