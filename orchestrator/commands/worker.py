"""`orchestrator worker --pool NAME`: one worker process of a pool."""

from __future__ import annotations

import argparse
import os
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

ORDER = 40


def register(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run a worker of one pool (an arq worker on the pool's queue)",
        description=(
            "Run the tasks forwarded to POOL, at most --concurrency at once. Publishes a "
            "heartbeat with its slots, writes a receipt per job, retries failures up to "
            "max_tries, and dead-letters what still fails. SIGTERM stops taking jobs and "
            "lets running ones finish within grace_period (a second one hands them back); "
            "so does a release by the pool's scaler."
        ),
    )
    worker.add_argument("--pool", required=True, help="pool to serve, e.g. metal or cloud")
    worker.add_argument(
        "--concurrency", type=positive_int, default=4, help="jobs at once (default: 4)"
    )
    worker.add_argument(
        "--executor",
        choices=("process", "thread"),
        default=None,
        help="where sync (plain def) tasks run: process — child processes, one per slot, "
        "every core, a stopped or crashed job ends only its child; thread — threads, "
        "cheap, for I/O-bound code, cannot be stopped mid-job (default: the pool's "
        "executor setting, else process). Async tasks always run on the event loop.",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the pool's queue is empty")
    worker.add_argument(
        "--idle-exit",
        type=_seconds,
        metavar="SECONDS",
        help="drain and leave after SECONDS without a job: a launched cloud worker's way "
        "out when no scaler is left to release it",
    )
    worker.add_argument(
        "--launch-id",
        default=os.environ.get("ORCHESTRATOR_LAUNCH_ID") or None,
        metavar="ID",
        help="the scaler launch this worker answers (announced in its heartbeat; default: "
        "$ORCHESTRATOR_LAUNCH_ID)",
    )
    add_wait_option(worker)
    add_common_options(worker)
    worker.set_defaults(command=_worker, service=True)


def _worker(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.worker.process import run_worker

    async def work() -> None:
        if await waited_for_redis(options, settings, "worker"):
            await run_worker(
                settings,
                options.pool,
                options.concurrency,
                burst=options.burst,
                idle_exit=options.idle_exit,
                launch_id=options.launch_id,
                executor_kind=options.executor,
            )

    run_async(work)
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value
