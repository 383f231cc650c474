"""`orchestrator conductor`: the service that routes backlog jobs to the pools."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from orchestrator.commands.common import (
    add_common_options,
    add_wait_option,
    run_async,
    waited_for_redis,
)
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 30


def register(commands: Any) -> None:
    conductor = commands.add_parser(
        "conductor",
        help="run the conductor: route backlog jobs to the pools (metal first)",
        description=(
            "Take jobs off the configured backlogs (and any a dispatch created), apply "
            "rate limits, and forward each to the first pool in order with a free slot, "
            "per the routing rules. Runs until SIGTERM/SIGINT; logs one JSON line per "
            "decision on stdout."
        ),
    )
    add_wait_option(conductor)
    add_common_options(conductor)
    conductor.set_defaults(command=_conductor, service=True)


def _conductor(options: argparse.Namespace, settings: Settings) -> int:
    import signal

    from orchestrator.conductor.rounds import Conductor
    from orchestrator.connection import connect
    from orchestrator.eviction import check_eviction
    from orchestrator.telemetry import serve_telemetry

    async def conduct() -> None:
        if not await waited_for_redis(options, settings, "conductor"):
            return
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-conductor"
        ) as redis:
            # Before anything is taken: on an evicting Redis no job is safe (`eviction`).
            await check_eviction(
                redis, settings.redis_url, refuse=True,
                allowed=settings.allow_evicting_redis, warn=_warn,
            )  # fmt: skip
            stop = anyio.Event()
            conductor = Conductor(settings, redis)
            async with (
                serve_telemetry(
                    settings.metrics_port, redis, conductor.metrics, settings.heartbeat_interval
                ),
                anyio.create_task_group() as tasks,
            ):

                async def on_signal() -> None:
                    """The first signal stops (drains); a next one hurries the workers
                    this conductor launched, as it does a fixed worker."""
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            if stop.is_set():
                                await conductor.hurry()
                            stop.set()

                tasks.start_soon(on_signal)
                await conductor.run(stop=stop)
                tasks.cancel_scope.cancel()

    run_async(conduct)
    return EXIT_OK


def _warn(line: str) -> None:
    import structlog

    structlog.get_logger("orchestrator.conductor").warning("redis_may_evict", problem=line)
