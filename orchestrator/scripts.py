"""The Lua scripts, loaded once from `orchestrator/lua/` and run by SHA.

Every multi-step change that must be atomic lives in one of these files. A script may
share helpers with others: a line `--#include NAME` is replaced by `lua/lib/NAME.lua`
(Redis scripts cannot load one another).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_INCLUDE = re.compile(r"^--#include (?P<name>[a-z_]+)$", re.MULTILINE)


@cache
def source(name: str) -> str:
    text = (files("orchestrator") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda found: source(f"lib/{found['name']}"), text)


def script(redis: Redis, name: str) -> AsyncScript:
    """A callable script bound to `redis`; redis-py re-loads it if the server lost it."""
    return redis.register_script(source(name))
