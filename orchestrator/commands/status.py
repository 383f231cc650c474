"""`orchestrator status [--json | --watch]`: backlogs, pools, rate limits and batches."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import add_common_options, positive_int, run_async
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 60


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show backlogs, pools (metal full? cloud filling?), rate limits and batches",
        description=(
            "One consistent snapshot of the service, read atomically in one Redis round "
            "trip (a few more to count big batches' receipts): backlog depths, the "
            "conductors' lists, each pool's workers, slots and jobs in flight (and, for a "
            "pool with a scaler, its workers by state, target, spend against the day's "
            "budget and last decision), rate-limit buckets, the latest batches' progress "
            "(settled, or settled with failures), jobs waiting for a worker that runs "
            "their task, and the dead letters; headed by which Redis it reads, and why "
            "that one."
        ),
    )
    mode = status.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="print one JSON document")
    mode.add_argument("--watch", action="store_true", help="a live view, redrawn until Ctrl-C")
    status.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds between redraws with --watch (default: 1)",
    )
    status.add_argument(
        "--batches",
        type=positive_int,
        default=10,
        metavar="N",
        help="show the N latest batches (default: 10)",
    )
    add_common_options(status)
    status.set_defaults(command=_status)


def _status(options: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from orchestrator.connection import connect
    from orchestrator.schedules.overview import schedules_and_held
    from orchestrator.status.snapshot import Snapshot, StatusReader, to_json
    from orchestrator.status.view import render
    from orchestrator.status.watch import watch

    console = Console()
    extra: dict[str, Any] = {}

    async def read() -> Snapshot | None:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-status"
        ) as redis:
            reader = StatusReader(
                redis,
                settings,
                batches=options.batches,
                source=getattr(options, "redis_source", None),  # set by the CLI
            )
            if options.watch:
                await watch(reader, console, options.interval)
                return None
            extra.update(await schedules_and_held(redis, settings))
            return await reader.read_exact()

    snapshot = run_async(read)
    if options.json:
        import orjson

        document = {**orjson.loads(to_json(snapshot)), **extra}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    elif snapshot is not None:
        console.print(render(snapshot, width=console.width))
        for line in _extra_lines(extra):
            console.print(line, markup=False, highlight=False)
    return EXIT_OK


def _extra_lines(extra: dict[str, Any]) -> list[str]:
    lines = []
    for held in extra.get("held", []):
        why = held["waiting_for"] or "waiting"
        lines.append(f"held {held['batch']} ({held['held']}, on {held['backlog']}): {why}")
    for schedule in extra.get("schedules", []):
        outcome = schedule["outcome"] or "not fired yet"
        batch = f" {schedule['last_batch']}" if schedule["last_batch"] else ""
        paused = " (paused)" if schedule["paused"] else ""
        lines.append(f"schedule {schedule['name']}{paused}: last{batch} {outcome}")
    return lines


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
