"""Serving the dashboard: the listening socket, then uvicorn until Ctrl-C.

The socket is bound here, before uvicorn starts, so that a port already taken is one
clear line rather than uvicorn's own exit.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
import uvicorn

from orchestrator.connection import RedisSource, connect
from orchestrator.errors import UserError
from orchestrator.settings import Settings
from orchestrator.web.access import Access, is_loopback, token_for
from orchestrator.web.app import REFRESH, Dashboard

log = structlog.get_logger("orchestrator.web")
STOP_WITHIN = 3  # seconds open pages (server-sent events) get to close on Ctrl-C


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket; a taken port is one line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def inherited(fd: int) -> socket.socket:
    """The listening socket at `fd`; anything else there is one line, not a traceback."""
    try:
        sock = socket.socket(fileno=fd)
    except (OSError, ValueError, OverflowError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(f"web: --fd {fd} is not an open socket: {why}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise UserError(f"web: --fd {fd} is not a listening TCP socket")
    sock.setblocking(False)
    return sock


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    interval: float = REFRESH,
    source: RedisSource | None = None,
    fd: int | None = None,
    show_token: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers: open pages get STOP_WITHIN).

    `fd`: a listening socket bound by whoever started this process (`orchestrator up`),
    served as it is; else one bound here on `host:port`."""
    token, made_up = token_for(settings, host)
    sock = inherited(fd) if fd is not None else listen(host, port)
    access = Access(host, sock.getsockname()[1], token, made_up or show_token)
    async with connect(
        settings.redis_url, namespace=settings.namespace, name="orchestrator-web"
    ) as redis:
        dashboard = Dashboard(redis, settings, token=token, interval=interval, source=source)
        config = uvicorn.Config(
            dashboard.app(loopback_only=is_loopback(host)),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=STOP_WITHIN,
            lifespan="off",
        )
        server = _Server(config, on_stop=dashboard.close)
        log.info(
            "web_started",
            url=access.url,
            hint="open the URL printed on stdout"
            if access.token_made_up
            else "actions ask for ORCHESTRATOR_WEB_TOKEN",
        )
        print(f"dashboard: {access.shown_url}", flush=True)
        await server.serve(sockets=[sock])
        log.info("web_stopped")


class _Server(uvicorn.Server):
    """uvicorn's server, but a stop on SIGTERM or SIGINT is a normal end (exit 0).

    uvicorn raises the signal again once it has shut down, so the process dies of it
    (-15 when `orchestrator up` stops its dashboard, as if it had been killed): here its
    handlers are installed the same way and restored, and the signal is not raised.
    And open pages' streams are ended first (`on_stop`): else uvicorn cancels them at
    its graceful timeout, each with a traceback in the log."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_stop()
        await super().shutdown(sockets=sockets)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (as uvicorn's own)
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
