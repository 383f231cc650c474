"""`orchestrator release BATCH…`: let batches held by `dispatch --after` run now."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 63


def register(commands: Any) -> None:
    release = commands.add_parser(
        "release",
        help="let a batch held by dispatch --after run now",
        description=(
            "Release held batches (dispatch --after): their jobs go onto their backlog at "
            "once, whatever the batches they wait for have done; the way on for a batch "
            "held because its input failed (--after-policy hold)."
        ),
    )
    release.add_argument("batches", nargs="+", metavar="BATCH", help="held batches to release")
    add_common_options(release)
    release.set_defaults(command=_release)


def _release(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.dispatch.after import Release, release
    from orchestrator.keys import Keys

    async def run() -> list[tuple[str, Release]]:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-release"
        ) as redis:
            keys = Keys(settings.namespace)
            return [(batch, await release(redis, keys, batch)) for batch in options.batches]

    for batch, _done in run_async(run):
        print(f"released {batch}")
    return EXIT_OK
