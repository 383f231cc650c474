"""A payload the conductor took and will not forward leaves its processing list for the
dead letters in one step (`lua/dead_letter.lua`), and only while the conductor still
holds it: a peer that recovered the list holds the live copy."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.conductor.rounds import Conductor
from orchestrator.keys import Keys
from orchestrator.settings import load_settings


async def test_a_held_payload_moves_to_the_dead_letters_and_a_recovered_one_stays(
    async_redis: redis.asyncio.Redis, redis_url: str, keys: Keys
) -> None:
    conductor = Conductor(load_settings(redis_url=redis_url, namespace=keys.namespace), async_redis)
    forwarder = conductor._forwarder
    held, other = b'{"task": 5}', b"not json"
    await async_redis.rpush(conductor.processing, held, other)

    with structlog.testing.capture_logs() as logs:
        await forwarder._dead_letter(held, None, "invalid_payload", "task: not a string")
    assert [(e["event"], e["reason"]) for e in logs] == [("dead_lettered", "invalid_payload")]
    assert await async_redis.lrange(conductor.processing, 0, -1) == [other]
    [record] = [orjson.loads(raw) for raw in await async_redis.lrange(keys.dead, 0, -1)]
    assert record["reason"] == "invalid_payload"
    assert record["payload"] == held.decode()
    assert record["error"] == "task: not a string"

    # A peer took the list back meanwhile (this conductor's heartbeat lapsed): the copy
    # on the ready list is the live one, and this conductor writes nothing.
    await async_redis.lmove(conductor.processing, keys.ready, "LEFT", "RIGHT")
    with structlog.testing.capture_logs() as logs:
        await forwarder._dead_letter(other, None, "invalid_payload", "not JSON")
    assert [e["event"] for e in logs] == ["stale"]
    assert await async_redis.llen(keys.dead) == 1
    assert await async_redis.lrange(keys.ready, 0, -1) == [other]


async def test_a_connection_lost_mid_way_never_loses_the_payload(
    async_redis: redis.asyncio.Redis, redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of the processing list and into the dead letters is one command: whichever
    command the connection dies at, the payload is in one of the two lists."""
    settings = load_settings(redis_url=redis_url, namespace=keys.namespace)
    raw = b'{"task": 5}'
    for fail_at in range(1, 5):
        await async_redis.delete(keys.dead)
        conductor = Conductor(settings, async_redis)
        await async_redis.rpush(conductor.processing, raw)
        with (
            monkeypatch.context() as patched,
            contextlib.suppress(RedisConnectionError),
            structlog.testing.capture_logs(),
        ):
            patched.setattr(async_redis, "execute_command", dying_at(async_redis, fail_at))
            await conductor._forwarder._dead_letter(raw, None, "invalid_payload", "bad")
        held = await async_redis.lrange(conductor.processing, 0, -1)
        dead = await async_redis.llen(keys.dead)
        assert (held, dead) in (([raw], 0), ([], 1)), f"failing at command {fail_at}"
        await async_redis.delete(conductor.processing)


def dying_at(client: redis.asyncio.Redis, fail_at: int) -> Callable[..., Awaitable[Any]]:
    """The client's command call, raising as a lost connection does at its `fail_at`th."""
    real: Callable[..., Awaitable[Any]] = client.execute_command
    calls = 0

    async def execute(*args: Any, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise RedisConnectionError("connection lost")
        return await real(*args, **options)

    return execute
