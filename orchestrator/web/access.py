"""Where the dashboard answers, and the token its actions need.

The token comes from `ORCHESTRATOR_WEB_TOKEN`. A dashboard on loopback without one
makes one up and hands it out in the URL it prints, after `#`, so that the browser
never sends it in a request line or a Referer (as Jupyter does); one bound to any other
address refuses to start without it. Kept apart from the server so that `up` can plan
a dashboard without importing the web stack.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from orchestrator.errors import UserError
from orchestrator.settings import Settings

DEFAULT_PORT = 8765
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether binding (or being addressed as) `host` keeps to this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    host: str
    port: int
    token: str
    token_made_up: bool  # not from ORCHESTRATOR_WEB_TOKEN: printed in the URL

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def shown_url(self) -> str:
        """The URL to print: with the token when it was made up (the page keeps it, so
        its buttons work), without when the user chose it."""
        return f"{self.url}#token={self.token}" if self.token_made_up else self.url


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
