"""The `Server-Timing` header: how long the server took to answer, as browsers'
developer tools and the dashboard's benchmark read it, apart from the network and the
client's own delays."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class ServerTiming:
    """ASGI middleware: `server-timing: app;dur=<ms>` on every response, measured from
    the request's arrival to its response's start (a stream's start, for events)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={took:.1f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, timed)
