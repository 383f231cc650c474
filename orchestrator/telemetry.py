"""`/healthz` and `/metrics` over HTTP, for container health checks and Prometheus.

A few lines of asyncio rather than a web framework: two GET routes, served on the
process's own event loop, so the health answer reflects that loop being alive too.
Healthy means Redis answers a PING within a second and the process's heartbeat is
fresh (renewed within three intervals); anything else is a 503 with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import orjson
import structlog
from anyio.abc import SocketStream
from redis.asyncio import Redis

from orchestrator.metrics import Metrics

log = structlog.get_logger("orchestrator.telemetry")


@asynccontextmanager
async def serve_telemetry(
    port: int | None, redis: Redis, metrics: Metrics, heartbeat_interval: float
) -> AsyncIterator[None]:
    """Serve on `port` (all interfaces: it runs in containers) for the block; None: off."""
    if port is None:
        yield
        return

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await _read_request(stream)
                path = request.split(b" ")[1] if request.count(b" ") >= 2 else b"/"
                if path == b"/metrics":
                    body, status, kind = (
                        metrics.exposition(),
                        b"200 OK",
                        b"text/plain; version=0.0.4",
                    )
                elif path == b"/healthz":
                    healthy, detail = await _health(redis, metrics, heartbeat_interval)
                    status = b"200 OK" if healthy else b"503 Service Unavailable"
                    body, kind = orjson.dumps(detail), b"application/json"
                else:
                    body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
                await stream.send(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                    + b"\r\nContent-Length: " + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n" + body
                )  # fmt: skip
            except (TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                pass

    listener = await anyio.create_tcp_listener(local_port=port, reuse_port=False)
    log.info("telemetry_listening", port=port, paths=["/healthz", "/metrics"])
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, handle)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
    finally:  # after serve() is cancelled: closed under it, accept() raises instead
        await listener.aclose()


async def _read_request(stream: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 8192:
        data += await stream.receive()
    return data.split(b"\r\n", 1)[0]


async def _health(
    redis: Redis, metrics: Metrics, interval: float
) -> tuple[bool, dict[str, object]]:
    redis_ok = False
    error = None
    try:
        with anyio.fail_after(1):
            redis_ok = bool(await redis.ping())
    except Exception as exc:  # any failure to answer is "unhealthy", with the reason
        error = str(exc) or type(exc).__name__
    age = metrics.heartbeat_age()
    fresh = age < 3 * interval
    detail: dict[str, object] = {
        "healthy": redis_ok and fresh,
        "redis": "ok" if redis_ok else f"unreachable: {error}",
        "heartbeat_age": round(age, 3),
    }
    return redis_ok and fresh, detail
