"""`one_call`: a MULTI's commands run as one script call, against real Redis servers
(the one on PATH and the embedded 6.2 one): in order, replies as EXEC gives them, a
failing command not stopping the rest, and a Redis out of memory refusing it whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from orchestrator import one_call
from orchestrator.eviction import is_oom
from orchestrator.stack.redis_server import RedisServer, embedded_redis_server, find_redis_server

SERVERS = sorted({str(find_redis_server()), str(embedded_redis_server())})


@pytest.fixture(params=SERVERS)
async def client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[redis.asyncio.Redis]:
    with RedisServer(tmp_path / "redis", executable=Path(request.param)) as server:
        async with redis.asyncio.Redis.from_url(server.url) as opened:
            yield opened


async def test_the_commands_run_in_order_with_their_replies(client: redis.asyncio.Redis) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset("{a}:h", "f", "one")
        pipe.hincrby("{a}:h", "n", 2)
        pipe.hincrbyfloat("{a}:h", "x", 0.25)
        pipe.rpush("{a}:l", "x", "y")
        pipe.ltrim("{a}:l", -1, -1)
        pipe.set("{a}:s", b"v", px=60_000)
        pipe.publish("somewhere", "hello")
        pipe.delete("{a}:gone", "{a}:s")
        replies = await one_call.execute(one_call.commands(client), pipe)
    assert replies == [1, 2, b"0.25", 2, b"OK", b"OK", 0, 1]
    assert await client.hgetall("{a}:h") == {b"f": b"one", b"n": b"2", b"x": b"0.25"}
    assert await client.lrange("{a}:l", 0, -1) == [b"y"]
    assert not await client.exists("{a}:s")


async def test_a_command_that_fails_after_one_succeeded_stops_none_of_the_rest(
    client: redis.asyncio.Redis,
) -> None:
    """As EXEC: the error is raised, and every other command was run."""
    await client.set("{a}:text", "not a hash")
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset("{a}:h", "f", "1")
        pipe.hincrby("{a}:text", "n", 1)  # WRONGTYPE
        pipe.hset("{a}:h", "g", "2")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await one_call.execute(one_call.commands(client), pipe)
    assert await client.hgetall("{a}:h") == {b"f": b"1", b"g": b"2"}


async def test_a_redis_out_of_memory_refuses_it_whole(client: redis.asyncio.Redis) -> None:
    """A MULTI is refused whole (EXECABORT); so is the script: its first write refused,
    nothing after it runs, not even the deletes Redis lets through when full."""
    await client.hset("{a}:h", "keep", "1")
    await client.set("{a}:s", "kept")
    await client.set("{a}:filler", "x" * 200_000)
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", str(used // 2))
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset("{a}:h", "new", "1")
        pipe.hdel("{a}:h", "keep")
        pipe.delete("{a}:s")
        with pytest.raises(ResponseError) as refused:
            await one_call.execute(one_call.commands(client), pipe)
    assert is_oom(refused.value)
    assert await client.hgetall("{a}:h") == {b"keep": b"1"}
    assert await client.get("{a}:s") == b"kept"
    await client.config_set("maxmemory", "0")  # room again: the same end goes through
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset("{a}:h", "new", "1")
        pipe.hdel("{a}:h", "keep")
        await one_call.execute(one_call.commands(client), pipe)
    assert await client.hgetall("{a}:h") == {b"new": b"1"}


async def test_a_command_it_is_not_known_to_run_is_refused_before_anything_is_sent(
    client: redis.asyncio.Redis,
) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset("{a}:h", "f", "1")
        pipe.flushall()
        with pytest.raises(ValueError, match="FLUSHALL"):
            await one_call.execute(one_call.commands(client), pipe)
    assert not await client.exists("{a}:h")
