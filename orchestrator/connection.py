"""Redis connections from a URL, which Redis a command talks to and why, and the one place
Redis failures become user errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

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
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.connection import HiredisRespSerializer
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import topology
from orchestrator.errors import RedisUnreachable, ServiceUnavailable
from orchestrator.logs import RedisOutage
from orchestrator.settings import redact_url

MIN_SERVER = (6, 2)  # BLMOVE and SMISMEMBER
# Seconds the first reply may take: a server that accepts connections and never answers
# (not Redis, or a proxy in front of nothing) would otherwise hang every command.
HANDSHAKE_TIMEOUT = 10.0
# Seconds any reply may take, and a connect: a Redis that stops answering (a frozen
# server, a partition: TCP stays open, nothing comes back) is noticed this late, as a
# TimeoutError each caller handles as it handles a refused connection. A blocking
# command (BLPOP, BLMOVE) gets its own block on top: see `blocking`.
COMMAND_TIMEOUT = 5.0
# Seconds a pooled connection may sit idle before it is checked (a PING) on its next use.
HEALTH_CHECK_INTERVAL = 15
# A subscriber hears nothing on a quiet channel: it asks the server itself (a PING on
# the subscribed connection) this often, and takes a server that said nothing for
# SUBSCRIBER_SILENCE seconds as gone.
SUBSCRIBER_PING = 2.0
SUBSCRIBER_SILENCE = COMMAND_TIMEOUT + SUBSCRIBER_PING
# Seconds between a service's tries while Redis does not answer: the first, and at most
# (doubling in between); the README's "up to 5 s between tries".
RETRY_FIRST, RETRY_AT_MOST = 0.5, 5.0
# Seconds dispatch waits for the replicas to have what it queued (`replicated`).
REPLICA_WAIT = 2.0
_READ_BUDGET: ContextVar[float | None] = ContextVar("orchestrator_redis_read", default=None)


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
async def connect(
    url: str, *, name: str = "orchestrator", namespace: str | None = None
) -> AsyncIterator[Redis]:
    """An open, checked client; any failure to reach Redis inside the block, or a server
    at the URL that does not speak Redis, is one `ServiceUnavailable` line naming the
    (password-free) URL.
    """
    shown = redact_url(url)
    try:
        client = open_client(url, name=name, namespace=namespace)
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
    except MasterNotFoundError:
        # redis-py's message is the repr of its sentinel clients: say it in words.
        raise RedisUnreachable(
            f"cannot reach Redis at {shown}: no sentinel answered with a master for its "
            "service (are the sentinels up, and is the service name right?)"
        ) from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise RedisUnreachable(cannot_reach(url, reason)) from None
    except NoPermissionError as exc:
        raise ServiceUnavailable(
            f"Redis at {shown} denied a command to this user: {exc} (see the README's ACL rule)"
        ) from None


def cannot_reach(url: str, reason: str) -> str:
    """The one line said of a Redis that does not answer (the URL without its password)."""
    return f"cannot reach Redis at {redact_url(url)}: {reason}"


async def wait_for_redis(
    url: str, outage: RedisOutage, *, name: str, namespace: str | None = None
) -> None:
    """Until Redis at `url` answers `connect`'s handshake: each miss (refused, timed
    out, no master named) goes to `outage` (`redis_unavailable` once, with the reason)
    and is tried again after `RETRY_FIRST`, doubling up to `RETRY_AT_MOST`; `redis_available`
    when it answers. Anything else (refused credentials, a server that is not Redis)
    raises as `connect` does: waiting would not mend it."""
    backoff = RETRY_FIRST
    while True:
        try:
            async with connect(url, name=name, namespace=namespace):
                outage.answered()
                return
        except RedisUnreachable as exc:
            outage.failed(exc, retry_in=backoff)
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, RETRY_AT_MOST)


async def replicated(redis: Redis, mark: str, within: float = REPLICA_WAIT) -> int | None:
    """Wait until the server's replicas have every write made so far (`WAIT`), at most
    `within` seconds: how many replicas do not have them yet (0: all), None when the
    server has none. Replication is asynchronous: a write a master acknowledged can be
    missing on the replica promoted after it dies. Jobs in flight survive that (a lost
    claim or receipt means a run again: at least once), but a lost dispatch would be
    jobs nobody knows to send again, so dispatch waits here.

    WAIT counts the writes of the connection it is sent on: so a write to `mark` (a hash
    field) goes first on the same connection, after every write of the caller's."""
    info = await redis.info("replication")
    replicas = int(info.get("connected_slaves", 0))
    if not replicas:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(mark, "replicated_at", str(time.time()))
        pipe.execute_command("WAIT", replicas, round(within * 1000))
        _, acknowledged = await pipe.execute()
    return max(replicas - int(acknowledged), 0)


@contextmanager
def blocking(block: float) -> Iterator[None]:
    """Around a command the server holds for up to `block` seconds (BLPOP, BLMOVE): its
    reply may take that long, plus `COMMAND_TIMEOUT`, before Redis is taken as gone."""
    token = _READ_BUDGET.set(block + COMMAND_TIMEOUT)
    try:
        yield
    finally:
        _READ_BUDGET.reset(token)


async def on_messages(
    redis: Redis, channel: str, event: Any, hear: Callable[[bytes], None] | None = None
) -> None:
    """Set `event` (anything with `set()`) on every message of `channel`, forever,
    resubscribing after Redis goes away: how workers and conductors wake each other.
    `hear`, when given, reads each message first.

    A quiet channel and a frozen server look the same to a subscriber (no bytes come),
    and a subscribed connection cannot wait with a read timeout without taking every
    quiet spell for an outage: so it pings the server itself and resubscribes when no
    reply came for `SUBSCRIBER_SILENCE` seconds."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=SUBSCRIBER_PING / 2)
                    now = time.monotonic()
                    if message is not None:
                        heard = now  # a message, or the reply to our ping
                        if message["type"] == "message":
                            if hear is not None:
                                hear(message["data"])
                            event.set()
                    if now - heard > SUBSCRIBER_SILENCE:
                        raise RedisTimeoutError(f"no reply on {channel} for {now - heard:.0f} s")
                    if now - pinged >= SUBSCRIBER_PING:
                        await pubsub.ping()
                        pinged = now
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await anyio.sleep(1.0)
            event.set()  # a message may have been missed meanwhile: look once anyway


def open_arq(
    url: str, *, name: str = "orchestrator", namespace: str | None = None,
    kind: type[ArqRedis] = ArqRedis,
) -> ArqRedis:  # fmt: skip
    """arq's client (`kind`) on `open_pool`, with JSON for jobs and results (never
    pickle). Closing it closes the pool: redis-py leaves a pool it was given open, and its
    connections would be left for the garbage collector."""
    client = kind(open_pool(url, name=name, namespace=namespace), job_serializer=orjson.dumps,
                      job_deserializer=orjson.loads)  # fmt: skip
    client.auto_close_connection_pool = True
    return client


def open_client(url: str, *, name: str = "orchestrator", namespace: str | None = None) -> Redis:
    """A client on `open_pool`; closing the client closes the pool."""
    return Redis.from_pool(open_pool(url, name=name, namespace=namespace))


def open_pool(
    url: str, *, name: str = "orchestrator", namespace: str | None = None
) -> ConnectionPool:
    """A connection pool for what `url` names (`topology`): one server, the master a
    Sentinel names, or the Cluster master that owns `namespace`'s slot. Its connections
    pack commands with hiredis and wait for a reply `COMMAND_TIMEOUT` seconds at most
    (`Tuned`).

    redis-py's asyncio connections pack in pure Python even when hiredis is installed
    (its sync ones do not); on the dispatch path that packing was a third of the time.
    Raises ValueError for a URL that names nothing usable.
    """
    target = topology.parse(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": COMMAND_TIMEOUT, "socket_timeout": COMMAND_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL, "client_name": name,
    }  # fmt: skip
    if target.kind == "server":
        if not url.lower().startswith("unix:"):  # a unix socket refuses TCP options
            options["socket_keepalive"] = True
        pool = ConnectionPool.from_url(url, **options)
        pool.connection_class = _TUNED.get(pool.connection_class, pool.connection_class)
        return pool
    options["socket_keepalive"] = True
    data = dict(target.options)
    tls = data.pop("connection_class", Connection) is SSLConnection
    if target.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={
                "socket_timeout": topology.SENTINEL_TIMEOUT,
                "socket_connect_timeout": topology.SENTINEL_TIMEOUT,
                "client_name": f"{name}-sentinel", **target.sentinel_options,
            },
        )  # fmt: skip
        connection = _SentinelSSLConnection if tls else _SentinelConnection
        return topology.SentinelPool(
            target.service, sentinel, connection_class=connection, **{**options, **data}
        )
    if namespace is None:
        raise ValueError("a Cluster URL is used for one namespace: the caller must name it")
    host, port = target.nodes[0]
    return topology.PinnedPool(
        target.nodes, namespace, host=host, port=port, parser_class=topology.CLUSTER_PARSER,
        connection_class=_ClusterSSLConnection if tls else _ClusterConnection,
        **{**options, **data},
    )  # fmt: skip


class Tuned:
    """What every connection of ours adds to redis-py's: commands packed by hiredis, and
    the longer read a blocking command asks for (`blocking`). Mixed in before the
    connection class (the Sentinel and Cluster ones too)."""

    _packer = HiredisRespSerializer()
    socket_timeout: float | None

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (redis-py's signature)
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        budget = _READ_BUDGET.get()
        read = super().read_response  # type: ignore[misc]
        if budget is None or timeout is not None:
            return await read(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )  # fmt: skip
        # The connection is this task's while it reads: its own timeout, stretched.
        usual, self.socket_timeout = self.socket_timeout, budget
        try:
            return await read(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )  # fmt: skip
        finally:
            self.socket_timeout = usual


class _Connection(Tuned, Connection):
    pass


class _SSLConnection(Tuned, SSLConnection):
    pass


class _UnixConnection(Tuned, UnixDomainSocketConnection):
    pass


class _SentinelConnection(Tuned, SentinelManagedConnection):  # type: ignore[misc]
    pass  # redis-py types its read's disconnect_on_error as a float there


class _SentinelSSLConnection(Tuned, SentinelManagedSSLConnection):  # type: ignore[misc]
    pass


class _ClusterConnection(topology.ClusterReplies, Tuned, Connection):
    pass


class _ClusterSSLConnection(topology.ClusterReplies, Tuned, SSLConnection):
    pass


_TUNED: dict[type[AbstractConnection], type[AbstractConnection]] = {
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
