"""`orchestrator web [--host H] [--port P]`: the dashboard in a browser."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import (
    add_common_options,
    add_wait_option,
    positive_int,
    run_async,
    waited_for_redis,
)
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 61


def register(commands: Any) -> None:
    web = commands.add_parser(
        "web",
        help="a dashboard in the browser: pools filling and spilling, batches, dead "
        "letters, and buttons to act on them",
        description=(
            "Serve the dashboard until Ctrl-C. Overview: each pool in routing order (its "
            "load, and whether metal is full and cloud is taking the overflow), cloud "
            "workers and today's spend, backlogs, rate limits, conductors. Batches: "
            "progress, and a page per batch with its jobs. Dead letters: payload, last "
            "error, requeue. Buttons cancel a batch, retry its failures, pause or resume "
            "a backlog or a pool; they need a token: ORCHESTRATOR_WEB_TOKEN, or, on "
            "loopback without it, one made up and printed in the URL to open. The same "
            "data is JSON under /api/ (/api/status is `status --json`). All open pages "
            "share one Redis read per --interval."
        ),
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; any other "
        "needs ORCHESTRATOR_WEB_TOKEN)",
    )
    web.add_argument("--port", type=positive_int, default=None, help="default: 8765")
    web.add_argument(
        "--fd",
        type=int,
        default=None,
        metavar="N",
        help="serve on the listening socket inherited as file descriptor N (how "
        "`orchestrator up` starts the dashboard, on a port it bound first); --host and "
        "--port then only say what it is bound to",
    )
    web.add_argument(
        "--show-token",
        action="store_true",
        help="print the URL to open with the token in it even when the token was given "
        "(`orchestrator up` gives its dashboard the token it keeps with the stack's data)",
    )
    web.add_argument(
        "--interval",
        type=_seconds,
        default=0.5,
        metavar="S",
        help="seconds between refreshes of what the pages show (default: 0.5)",
    )
    add_wait_option(web)
    add_common_options(web)
    web.set_defaults(command=_web, service=True)


def _web(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.web.access import DEFAULT_PORT
    from orchestrator.web.server import serve

    async def run() -> None:
        if not await waited_for_redis(options, settings, "web"):
            return
        await serve(
            settings,
            options.host,
            options.port or DEFAULT_PORT,
            interval=options.interval,
            source=getattr(options, "redis_source", None),
            fd=options.fd,
            show_token=options.show_token,
        )

    run_async(run)
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 60 seconds, got {text}")
    return value
