"""Serving the dashboard: the listening socket, the token, uvicorn.

The socket is bound here, before uvicorn starts, so that a port already taken is one
clear line (and `up` can fall back to a free port) rather than uvicorn's own exit. The
token comes from `ORCHESTRATOR_WEB_TOKEN`; a dashboard on loopback without one makes
one up and hands it out in the URL it prints (after `#`, so the browser never sends it
in a request line or a Referer), as Jupyter does.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

import structlog
import uvicorn

from orchestrator.connection import connect
from orchestrator.errors import UserError
from orchestrator.settings import Settings
from orchestrator.stack_record import RedisSource
from orchestrator.web.app import Dashboard
from orchestrator.web.guard import is_loopback

log = structlog.get_logger("orchestrator.web")
DEFAULT_PORT = 8765
STOP_WITHIN = 3  # seconds open pages (server-sent events) get to close on Ctrl-C


@dataclass(frozen=True, slots=True)
class Access:
    """Where the dashboard answers, and the token its actions need."""

    host: str
    port: int
    token: str
    token_made_up: bool  # not from ORCHESTRATOR_WEB_TOKEN: printed in the URL

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def url_with_token(self) -> str:
        """The URL to open to be able to act: the page keeps the token from it."""
        return f"{self.url}#token={self.token}"


def token_for(settings: Settings, host: str) -> tuple[str, bool]:
    """The token and whether it was made up here; refuses a non-loopback bind without one."""
    if settings.web_token is not None and settings.web_token.get_secret_value():
        return settings.web_token.get_secret_value(), False
    if not is_loopback(host):
        raise UserError(
            f"web: binding {host} exposes the dashboard to the network: set "
            "ORCHESTRATOR_WEB_TOKEN to the token its actions must carry"
        )
    return secrets.token_urlsafe(24), True


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


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    interval: float = 1.0,
    source: RedisSource | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers: open pages get STOP_WITHIN)."""
    token, made_up = token_for(settings, host)
    sock = listen(host, port)
    access = Access(host, sock.getsockname()[1], token, made_up)
    async with connect(settings.redis_url, name="orchestrator-web") as redis:
        dashboard = Dashboard(redis, settings, token=token, interval=interval, source=source)
        config = uvicorn.Config(
            dashboard.app(loopback_only=is_loopback(host)),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=STOP_WITHIN,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        log.info(
            "web_started",
            url=access.url,
            hint="open the URL printed on stdout"
            if made_up
            else "actions ask for ORCHESTRATOR_WEB_TOKEN",
        )
        print(f"dashboard: {access.url_with_token if made_up else access.url}", flush=True)
        await server.serve(sockets=[sock])
        log.info("web_stopped")
