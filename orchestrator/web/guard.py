"""Who may act through the dashboard, and which requests are refused before any route.

- **Actions need the token.** Every POST carries it in the `X-Orchestrator-Token`
  header, compared in constant time. A header, not a cookie: a browser never adds it
  to a request another site makes, so a forged form or image cannot act (CSRF). As
  defence in depth, a POST whose `Origin` or `Sec-Fetch-Site` says it comes from
  another site is refused too.
- **Hosts.** Bound to loopback, only requests addressed to a loopback name are served,
  so a web page cannot reach the dashboard through a DNS name it points at 127.0.0.1
  (DNS rebinding).
- **Headers.** A content security policy that allows nothing but the app's own files:
  even a payload that slipped past escaping could not run a script or send data out.
- **Redis down.** A read Redis does not answer is a 503 (and an `unavailable` event on
  a live page's stream) saying so, so a page tells "Redis unavailable" from "the
  dashboard is gone".
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.connection import cannot_reach
from orchestrator.web.access import is_loopback

TOKEN_HEADER = "x-orchestrator-token"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def refusal(why: str, status: int = 403, **more: str) -> Response:
    body = {"error": why, **more}
    return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)


def unavailable(redis_url: str, exc: BaseException) -> dict[str, str]:
    """What a page is told while Redis does not answer: `redis` says so, `reason` is the
    failure (what the page shows), `error` the whole line, with the URL (no password)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return {
        "error": cannot_reach(redis_url, reason),
        "redis": "unavailable",
        "reason": reason,
    }


def action_refusal(request: Request, token: str) -> Response | None:
    """Why this POST may not act, as the response to send; None when it may."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return refusal(f"cross-site request refused ({site})")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return refusal("cross-origin request refused")
    given = request.headers.get(TOKEN_HEADER, "")
    if not given:
        return refusal("this action needs the dashboard token (X-Orchestrator-Token header)")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return refusal("wrong dashboard token")
    return None


class HostGuard:
    """ASGI middleware: refuse requests whose Host is not a loopback name (when bound
    to loopback) and add the security headers to every response."""

    def __init__(self, app: ASGIApp, *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(name):
                why = f"host {host!r} refused: this dashboard answers on loopback names only"
                await refusal(why, 421)(scope, receive, send)
                return

        async def with_headers(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))  # type: ignore[call-overload]
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)  # type: ignore[arg-type]
