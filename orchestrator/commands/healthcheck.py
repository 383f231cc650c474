"""`orchestrator healthcheck`: ask this container's process for its /healthz (exit 0/1).

What the Dockerfile's HEALTHCHECK runs; a tiny synchronous GET, since it is a one-shot
command with no event loop to keep free.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from typing import Any

from orchestrator.commands.common import add_common_options, positive_int
from orchestrator.errors import EXIT_FAILURE, EXIT_OK, UserError
from orchestrator.settings import Settings

ORDER = 110


def register(commands: Any) -> None:
    check = commands.add_parser(
        "healthcheck",
        help="exit 0 if the local conductor/worker reports healthy on /healthz",
        description=(
            "GET http://HOST:PORT/healthz of a conductor or worker (PORT: the "
            "metrics_port setting) and exit 0 when it answers 200, 1 otherwise."
        ),
    )
    check.add_argument("--host", default="127.0.0.1", help="where the process listens")
    check.add_argument("--port", type=positive_int, default=None, help="default: metrics_port")
    add_common_options(check)
    check.set_defaults(command=_healthcheck, uses_stack=False)


def _healthcheck(options: argparse.Namespace, settings: Settings) -> int:
    port = options.port or settings.metrics_port
    if port is None:
        raise UserError("no port: pass --port or set ORCHESTRATOR_METRICS_PORT")
    url = f"http://{options.host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(response.read().decode())
            return EXIT_OK
    except urllib.error.HTTPError as exc:
        print(exc.read().decode())
        return EXIT_FAILURE
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {getattr(exc, 'reason', exc)}")
        return EXIT_FAILURE
