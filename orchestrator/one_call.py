"""A MULTI sent as one script call (`lua/commands.lua`): the commands staged on a
redis-py pipeline, as any MULTI of ours is built, then run by one EVALSHA.

Where a job ends, a MULTI of fifteen-odd commands costs the worker more CPU than the rest
of the job's handling together: redis-py reads and parses each of its replies apart (a
timeout scope and a parser call each). As a script, it is one request and one reply,
atomic as the MULTI was, and refused whole by a Redis out of memory as the MULTI was
(the script says how).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from orchestrator.scripts import script

# The commands a staged MULTI may hold here, each naming its key first: the key of the
# first one names the slot the script runs in (KEYS[1]). PUBLISH names a channel.
_KEY_FIRST = frozenset({
    "DEL", "EXPIRE", "EXPIREAT", "HDEL", "HINCRBY", "HINCRBYFLOAT", "HSET", "LTRIM",
    "PEXPIRE", "RPUSH", "SET", "ZINCRBY", "ZREM",
})  # fmt: skip
_NO_KEY = frozenset({"PUBLISH"})


def commands(redis: Redis) -> AsyncScript:
    """The script bound to `redis`: made once by its user, run by `execute`."""
    return script(redis, "commands")


async def execute(run: AsyncScript, pipe: Pipeline) -> list[Any]:
    """Run the commands staged on `pipe` (never executed itself) in one atomic call of
    `run` (`commands`); each one's reply, the first error raised as a MULTI's is."""
    words: list[Any] = []
    slot_key: Any = None
    for args, _options in pipe.command_stack:
        name = str(args[0]).upper()
        if name not in _KEY_FIRST and name not in _NO_KEY:
            raise ValueError(f"{name} is not a command lua/commands.lua is known to run")
        if slot_key is None and name in _KEY_FIRST:
            slot_key = args[1]
        words += [len(args), *args]
    if slot_key is None:
        raise ValueError("no command names a key")
    replies: list[Any] = await run(keys=[slot_key], args=words)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
