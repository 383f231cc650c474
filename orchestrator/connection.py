"""Redis connections from a URL, and the one place Redis failures become user errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
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
        client = Redis.from_url(
            url, socket_connect_timeout=5, socket_keepalive=True, client_name=name
        )
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
    except ResponseError as exc:
        if "NOPERM" in str(exc) or "NOAUTH" in str(exc):
            raise ServiceUnavailable(f"Redis at {shown} denied a command: {exc}") from None
        raise


async def _server_version(client: Redis) -> tuple[int, ...]:
    info = await client.info("server")
    return tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
