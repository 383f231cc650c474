"""Redis connections from a URL, which Redis a command talks to and why, and the one place
Redis failures become user errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.connection import HiredisRespSerializer
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import redact_url

MIN_SERVER = (6, 2)  # BLMOVE and SMISMEMBER
# Seconds the first reply may take: a server that accepts connections and never answers
# (not Redis, or a proxy in front of nothing) would otherwise hang every command.
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class RedisSource:
    """Which Redis a command talks to, and why that one."""

    url: str
    origin: str  # "--redis-url", "REDIS_URL", a config file, "./data/stack.json", "default"
    detail: str = ""

    def describe(self) -> str:
        extra = f", {self.detail}" if self.detail else ""
        return f"{redact_url(self.url)} (from {self.origin}{extra})"


@asynccontextmanager
async def connect(url: str, *, name: str = "orchestrator") -> AsyncIterator[Redis]:
    """An open, checked client; any failure to reach Redis inside the block, or a server
    at the URL that does not speak Redis, is one `ServiceUnavailable` line naming the
    (password-free) URL.
    """
    shown = redact_url(url)
    try:
        client = open_client(url, name=name)
    except ValueError as exc:
        raise ServiceUnavailable(f"invalid Redis URL {shown}: {exc}") from None
    try:
        async with client:
            version = await _server_version(client, shown)
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


async def on_messages(
    redis: Redis, channel: str, event: Any, hear: Callable[[bytes], None] | None = None
) -> None:
    """Set `event` (anything with `set()`) on every message of `channel`, forever,
    resubscribing after Redis goes away: how workers and conductors wake each other.
    `hear`, when given, reads each message first."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        if hear is not None:
                            hear(message["data"])
                        event.set()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await anyio.sleep(1.0)


def open_arq(url: str, *, name: str = "orchestrator") -> ArqRedis:
    """arq's client on `open_pool`, with JSON for jobs and results (never pickle).
    Closing it closes the pool: redis-py leaves a pool it was given open, and its
    connections would be left for the garbage collector."""
    client = ArqRedis(open_pool(url, name=name), job_serializer=orjson.dumps,
                      job_deserializer=orjson.loads)  # fmt: skip
    client.auto_close_connection_pool = True
    return client


def open_client(url: str, *, name: str = "orchestrator") -> Redis:
    """A client on `open_pool`; closing the client closes the pool."""
    return Redis.from_pool(open_pool(url, name=name))


def open_pool(url: str, *, name: str = "orchestrator") -> ConnectionPool:
    """A connection pool whose connections pack commands with hiredis.

    redis-py's asyncio connections pack in pure Python even when hiredis is installed
    (its sync ones do not); on the dispatch path that packing was a third of the time.
    """
    options: dict[str, Any] = {"socket_connect_timeout": 5, "client_name": name}
    if urlsplit(url).scheme != "unix":  # a unix socket connection refuses TCP options
        options["socket_keepalive"] = True
    pool = ConnectionPool.from_url(url, **options)
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


async def _server_version(client: Redis, shown: str) -> tuple[int, ...]:
    """The server's (major, minor): the handshake, so whatever answers that is not
    Redis (an HTTP server, a proxy refusing us, a port that never replies) ends here,
    as one line naming the URL."""
    try:
        with anyio.move_on_after(HANDSHAKE_TIMEOUT):
            info = await client.info("server")
            return tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
        reason = f"no reply within {HANDSHAKE_TIMEOUT:g} s"
    except (RedisConnectionError, RedisTimeoutError, AuthenticationError, NoPermissionError):
        raise  # reported by `connect`, each in its own words
    except RedisError as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, always
    except (KeyError, TypeError, ValueError, AttributeError):
        reason = "its INFO reply has no usable redis_version"
    raise ServiceUnavailable(f"{shown} does not answer like a Redis server ({reason})")
