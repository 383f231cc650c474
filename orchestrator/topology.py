"""Which Redis a URL names, and the connection pool that keeps reaching it:

- `redis://`, `rediss://`, `unix://`: one server (redis-py's own URL rules);
- `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`, and
  `rediss+sentinel://` for TLS to the data nodes: the master Redis Sentinel names for
  `service`, followed across failovers (`SentinelPool`);
- `redis+cluster://[user:password@]host:port[,host:port…]`, and `rediss+cluster://`: a
  Redis Cluster. Every key of a namespace shares one hash tag, so one namespace's keys
  live in one slot on one master: the pool is pinned to that master, found by redis-py's
  own cluster client, and re-pinned when the slot moves (`PinnedPool`). Spreading
  namespaces over a cluster spreads the work; one namespace is one master's.

The user, password and query options (`?ssl_cert_reqs=none`, `?ssl_ca_certs=…`) are
the data nodes'; sentinels are asked without credentials unless `sentinel_password`
(and `sentinel_username`) are given in the query.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import ClusterParser, RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("orchestrator.redis")
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# How often each process asks Sentinel who the master is. redis-py 5 asks only when a
# connection connects: a connection open on a master that Sentinel demoted (a manual
# failover, a partition that healed) keeps writing there until Sentinel kills its
# clients, ~10 s later, and those writes are lost. Asked this often, every connection
# leaves the old master within this long of the switch.
FOLLOW_EVERY = 0.5
SENTINEL_TIMEOUT = 1.0  # seconds a sentinel may take to answer before the next is asked
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class Target:
    """A URL taken apart: its kind, its seed nodes, and the data nodes' options."""

    kind: str  # "server", "sentinel" or "cluster"
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    sentinel_options: dict[str, Any] = field(default_factory=dict)


def parse(url: str) -> Target:
    """Raises ValueError with a sentence fit for the user when the URL is not usable."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in SENTINEL_SCHEMES or scheme.lower() in CLUSTER_SCHEMES:
        return _parse_multi(scheme.lower(), rest)
    return Target("server", options=dict(parse_url(url)))


def _parse_multi(scheme: str, rest: str) -> Target:
    sentinel = scheme in SENTINEL_SCHEMES
    base = SENTINEL_SCHEMES.get(scheme) or CLUSTER_SCHEMES[scheme]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    credentials, _, hosts = authority.rpartition("@")
    nodes = tuple(_node(part) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise ValueError("name at least one host:port")
    parts = [unquote(p) for p in path.split("/") if p]
    if sentinel:
        if not parts:
            raise ValueError("name the Sentinel service after the hosts (…/mymaster)")
        service, db = parts[0], parts[1] if len(parts) > 1 else "0"
        if len(parts) > 2:
            raise ValueError("the path is /service[/db]")
    else:
        service, db = "", "0"
        if parts:
            raise ValueError("a Cluster URL has no path: a cluster has one database")
    pairs = parse_qsl(query, keep_blank_values=True)
    sentinel_query = {key: value for key, value in pairs if key in _SENTINEL_QUERY}
    data_query = urlencode([(key, value) for key, value in pairs if key not in _SENTINEL_QUERY])
    # redis-py's own parser for what the data nodes are given (credentials, TLS options)
    parsed = parse_url(f"{base}://{credentials + '@' if credentials else ''}x/{db}?{data_query}")
    options: dict[str, Any] = {
        key: value for key, value in parsed.items() if key not in ("host", "port", "path")
    }
    if not db.isdigit():
        raise ValueError(f"the database must be a number, not {db!r}")
    sentinel_options = {
        key.removeprefix("sentinel_"): value for key, value in sentinel_query.items()
    }
    return Target("sentinel" if sentinel else "cluster", nodes, service, options, sentinel_options)


def _node(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text.strip()!r} is not host:port")
    return host.strip("[]"), int(port)


class SentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, made to follow a failover by itself (see FOLLOW_EVERY):
    a task asks the sentinels who the master is, and when that changes, every connection
    of the pool, in use or idle, is closed, so each command after it reaches the new
    master. Connect errors are not retried against the same address (redis-py 5's retry
    keeps dialing the old master, redis/redis-py#3560): the callers' own retry connects
    afresh, which asks Sentinel again."""

    def __init__(self, service: str, sentinel: Sentinel, **kwargs: Any) -> None:
        super().__init__(service, sentinel, **kwargs)  # type: ignore[no-untyped-call]
        self._follower: asyncio.Task[None] | None = None

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        await super().ensure_connection(connection)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            try:
                master = await self.sentinel_manager.discover_master(self.service_name)
            except (RedisError, OSError):
                continue  # no sentinel answers, or none knows a master: ask again
            except Exception:  # a sentinel's odd answer: said, and asked again
                log.exception("sentinel_answer_unreadable", service=self.service_name)
                continue
            self.master_address = master
            await self._drop_elsewhere(master)

    async def _drop_elsewhere(self, master: tuple[str, int]) -> None:
        """Close every connection, in use or idle, that is not on `master` (one left on
        a master Sentinel demoted, or one that was connecting while the master moved)."""
        connections = [*self._available_connections, *self._in_use_connections]
        elsewhere = [
            each
            for each in connections
            if getattr(each, "host", None) is not None
            and (each.host, int(each.port)) != (master[0], int(master[1]))  # type: ignore[attr-defined]
        ]
        await asyncio.gather(
            *(each.disconnect(nowait=True) for each in elsewhere), return_exceptions=True
        )

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections and self._follower is not None:  # closed for good
            follower, self._follower = self._follower, None
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            for each in self.sentinel_manager.sentinels:
                with suppress(RedisError, OSError):
                    await each.aclose()
        await super().disconnect(inuse_connections)


class PinnedPool(ConnectionPool):
    """Connections to the one Cluster master that owns a namespace's hash slot.

    The owner is found by redis-py's cluster client (CLUSTER SLOTS), on first use and
    again whenever a reply says the slot is elsewhere: a MOVED reply re-pins the pool to
    the node it names (a reshard), and that command fails as a lost connection does, so
    its caller's retry runs it on the new owner. A slot being migrated (ASK, TRYAGAIN)
    or a cluster without a quorum (CLUSTERDOWN) are waited out the same way."""

    def __init__(self, seeds: tuple[tuple[str, int], ...], namespace: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.seeds = seeds
        self.namespace = namespace
        self.owner: tuple[str, int] | None = None

    def make_connection(self) -> AbstractConnection:
        connection: AbstractConnection = super().make_connection()  # type: ignore[no-untyped-call]
        connection.connection_pool = weakref.proxy(self)  # type: ignore[attr-defined]
        return connection

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        """Called with the pool's lock held: one caller finds the owner, the rest wait."""
        owner = self.owner
        if owner is None:
            owner = await self._find_owner()
            self.pin(owner)
        if (getattr(connection, "host", None), getattr(connection, "port", None)) != owner:
            await connection.disconnect()  # made, or left idle, before the last re-pin
            connection.host, connection.port = owner  # type: ignore[attr-defined]
        try:
            await super().ensure_connection(connection)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # The owner died (a replica promoted in its place sends no MOVED) or moved:
            # the next connection asks the cluster again, the old owner among the seeds.
            self.owner = None
            if owner not in self.seeds:
                self.seeds = (*self.seeds, owner)
            raise

    def pin(self, owner: tuple[str, int]) -> None:
        self.owner = owner
        self.connection_kwargs["host"], self.connection_kwargs["port"] = owner

    def moved(self, host: str, port: int) -> None:
        """A reply named the slot's new owner (host may be empty: the one asked)."""
        current = self.owner or self.seeds[0]
        self.pin((host or current[0], port))

    async def _find_owner(self) -> tuple[str, int]:
        options = {
            key: value
            for key, value in self.connection_kwargs.items()
            if key in _CLUSTER_CLIENT_OPTIONS
        }
        options["ssl"] = issubclass(self.connection_class, SSLConnection)
        last: Exception | None = None
        for host, port in self.seeds:
            cluster = RedisCluster(host=host, port=port, require_full_coverage=False, **options)
            try:
                await cluster.initialize()
                node = cluster.get_node_from_key("{" + self.namespace + "}")
                return str(node.host), int(node.port)
            except (AuthenticationError, NoPermissionError):
                raise  # said as what it is, not as an unreachable cluster
            except (RedisError, RedisClusterException, OSError) as exc:
                last = exc  # that seed is down (or not a cluster node): the next one
            finally:
                with suppress(RedisError, OSError):
                    await cluster.aclose()
        raise RedisConnectionError(f"no Cluster node told who owns the namespace's slot: {last}")


_CLUSTER_CLIENT_OPTIONS = {
    "username", "password", "socket_timeout", "socket_connect_timeout", "ssl_cert_reqs",
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "ssl_password",
    "ssl_ca_path", "ssl_ca_data",
}  # fmt: skip


class ClusterReplies:
    """Mixed into a pinned pool's connections: a reply that says the slot is elsewhere
    re-pins the pool and fails the command as a lost connection (see `PinnedPool`)."""

    connection_pool: PinnedPool

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except MovedError as exc:
            self.connection_pool.moved(str(exc.host), int(exc.port))
            moved = f"the namespace's slot moved to {exc.host}:{exc.port}"
            raise RedisConnectionError(moved) from exc
        except (AskError, TryAgainError, ClusterDownError) as exc:
            moving = f"the cluster is moving the namespace's slot: {exc}"
            raise RedisConnectionError(moving) from exc


CLUSTER_PARSER = ClusterParser  # raises MOVED and ASK as their own errors, hiredis kept
