"""`orchestrator redis-url`: print the Redis URL the other commands here would use, so
that a program in another language (redis-cli, Node, Go) queues into the same Redis as
`up` — whose embedded Redis is on 6399 or a free port, not on 6379."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import add_common_options
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 85


def register(commands: Any) -> None:
    command = commands.add_parser(
        "redis-url",
        help="print the Redis URL commands here use (a running `up`'s, or yours)",
        description=(
            "Print the Redis URL that every other command run here would use, found as "
            "they find it: --redis-url, REDIS_URL (or ORCHESTRATOR_REDIS_URL), redis_url "
            "in orchestrator.toml, the stack a running `orchestrator up` recorded in this "
            "directory, else redis://127.0.0.1:6379/0. The URL is printed whole, password "
            'included, for programs to use: e.g. redis-cli -u "$(orchestrator redis-url)". '
            "--source prints where it came from on stderr."
        ),
    )
    command.add_argument(
        "--source", action="store_true", help="also say on stderr where the URL came from"
    )
    add_common_options(command)
    command.set_defaults(command=_redis_url)


def _redis_url(options: argparse.Namespace, settings: Settings) -> int:
    import sys

    print(settings.redis_url)
    if options.source:
        source = options.redis_source
        detail = f", {source.detail}" if source.detail else ""
        print(f"from {source.origin}{detail}", file=sys.stderr)
    return EXIT_OK
