"""The Lua scripts, loaded once from `orchestrator/lua/` and run by SHA.

Every multi-step change that must be atomic lives in one of these files.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def source(name: str) -> str:
    return (files("orchestrator") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script(redis: Redis, name: str) -> AsyncScript:
    """A callable script bound to `redis`; redis-py re-loads it if the server lost it."""
    return redis.register_script(source(name))
