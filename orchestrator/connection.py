"""Redis connections from a URL, and the one place Redis failures become user errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.connection import HiredisRespSerializer
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import redact_url

MIN_SERVER = (6, 2)  # BLMOVE and SMISMEMBER


@asynccontextmanager
async def connect(url: str, *, name: str = "orchestrator") -> AsyncIterator[Redis]:
    """An open, checked client; any failure to reach Redis inside the block is reported
    as one `ServiceUnavailable` line naming the (password-free) URL.
    """
    shown = redact_url(url)
    try:
        client = open_client(url, name=name)
    except ValueError as exc:
        raise ServiceUnavailable(f"invalid Redis URL {shown}: {exc}") from None
    try:
        async with client:
            version = await _server_version(client)
            if version < MIN_SERVER:
                raise ServiceUnavailable(
                    f"Redis at {shown} is {'.'.join(map(str, version))}; 6.2 or newer is needed"
                )
            yield client
    except AuthenticationError as exc:
        raise ServiceUnavailable(f"Redis at {shown} refused the credentials: {exc}") from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ServiceUnavailable(f"cannot reach Redis at {shown}: {reason}") from None
    except NoPermissionError as exc:
        raise ServiceUnavailable(
            f"Redis at {shown} denied a command to this user: {exc} (see the README's ACL rule)"
        ) from None


async def on_messages(redis: Redis, channel: str, event: Any) -> None:
    """Set `event` (anything with `set()`) on every message of `channel`, forever,
    resubscribing after Redis goes away: how workers and conductors wake each other."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        event.set()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await anyio.sleep(1.0)


def open_client(url: str, *, name: str = "orchestrator") -> Redis:
    """A client on `open_pool`; closing the client closes the pool."""
    return Redis.from_pool(open_pool(url, name=name))


def open_pool(url: str, *, name: str = "orchestrator") -> ConnectionPool:
    """A connection pool whose connections pack commands with hiredis.

    redis-py's asyncio connections pack in pure Python even when hiredis is installed
    (its sync ones do not); on the dispatch path that packing was a third of the time.
    """
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=5, socket_keepalive=True, client_name=name
    )
    pool.connection_class = _HIREDIS_PACKING.get(pool.connection_class, pool.connection_class)
    return pool


class _HiredisPacking:
    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _Connection(_HiredisPacking, Connection):
    pass


class _SSLConnection(_HiredisPacking, SSLConnection):
    pass


class _UnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_HIREDIS_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


async def _server_version(client: Redis) -> tuple[int, ...]:
    info = await client.info("server")
    return tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
