"""`orchestrator up`: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.commands.common import add_common_options, positive_int, run_async
from orchestrator.errors import EXIT_FAILURE, EXIT_OK
from orchestrator.local_stack import DEFAULT_REDIS_PORT, StackPlan, local_stack, wait_for_exit
from orchestrator.settings import Settings, redact_url

ORDER = 80
log = structlog.get_logger("orchestrator.up")


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the whole stack here: Redis, conductor, a metal and a cloud worker",
        description=(
            "Start a conductor and one worker process per pool against REDIS_URL, or, "
            "when no Redis URL is set, against an embedded Redis server (data kept in "
            "DATA_DIR/redis with the append-only file on, so a restart loses nothing). "
            "Ctrl-C or SIGTERM stops everything cleanly: workers finish running jobs "
            "within grace_period first."
        ),
    )
    up.add_argument("--metal", type=positive_int, default=4, help="metal worker slots (4)")
    up.add_argument("--cloud", type=positive_int, default=8, help="cloud worker slots (8)")
    up.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="embedded Redis data (./data)"
    )
    up.add_argument(
        "--redis-port", type=positive_int, default=DEFAULT_REDIS_PORT,
        help=f"embedded Redis port ({DEFAULT_REDIS_PORT})",
    )  # fmt: skip
    add_common_options(up)
    up.set_defaults(command=_up, service=True)


def _up(options: argparse.Namespace, settings: Settings) -> int:
    plan = StackPlan(
        concurrency={"metal": options.metal, "cloud": options.cloud},
        data_dir=options.data_dir,
        redis_port=options.redis_port,
    )

    async def up() -> int:
        async with local_stack(settings, plan) as stack:
            if stack.embedded is not None:
                log.info(
                    "ready",
                    hint=f"in another shell: export REDIS_URL={redact_url(stack.redis_url)}",
                )
            stopped_by = anyio.Event()
            exited: list[str] = []
            async with anyio.create_task_group() as tasks:

                async def on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            stopped_by.set()
                            return

                async def on_child_exit() -> None:
                    exited.append(await wait_for_exit(stack))
                    stopped_by.set()

                tasks.start_soon(on_signal)
                tasks.start_soon(on_child_exit)
                await stopped_by.wait()
                tasks.cancel_scope.cancel()
            if exited:
                log.error("child_exited", process=exited[0], stopping="everything")
                return EXIT_FAILURE
        return EXIT_OK

    code: int = run_async(up)
    return code
