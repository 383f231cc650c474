"""system_test: batches that prove the system end to end.

orchestrator plan system_test --mode stress_supervisor --count 10
python workflows/system_test/plan.py --mode debug --count 3
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
from collections.abc import Iterator

from orchestrator.errors import UserError
from orchestrator.job import JobSpec, spec
from orchestrator.workflow import Workflow, positive_int


def stress_supervisor(options: argparse.Namespace) -> Iterator[JobSpec]:
    """long sleepers (90-150 s by default) that fill metal and spill into cloud"""
    low, high = options.min_seconds, options.max_seconds
    if not 0 <= low <= high:
        raise UserError(f"need 0 <= --min-seconds <= --max-seconds, got {low} and {high}")
    rng = random.Random(options.seed)
    for index in range(options.count):
        seconds = min(max(round(rng.uniform(low, high), 2), low), high)
        yield spec("system.sleep", seconds, meta={"index": index})


def debug(options: argparse.Namespace) -> Iterator[JobSpec]:
    """echo jobs: the quickest proof that jobs flow from manifest to worker"""
    for index in range(options.count):
        yield spec("system.echo", f"debug {index}", index, meta={"index": index})


def crud(options: argparse.Namespace) -> Iterator[JobSpec]:
    """database write / read back / delete checks"""
    run = secrets.token_hex(4)
    # Absolute: a worker started in another directory must find the same file.
    extra = {"database": os.path.abspath(options.database)} if options.database else {}
    for index in range(options.count):
        yield spec(
            "system.crud", f"crud-{run}-{index}", f"value-{index}", meta={"index": index}, **extra
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=positive_int, default=10, help="jobs to plan (default: 10)")
    parser.add_argument(
        "--seed", type=int, default=None, help="stress_supervisor: seed for repeatable durations"
    )
    parser.add_argument(
        "--min-seconds", type=float, default=90.0, help="stress_supervisor: shortest sleep (90)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=150.0, help="stress_supervisor: longest sleep (150)"
    )
    parser.add_argument(
        "--database", default=None, help="crud: SQLite file (default: the crud_database setting)"
    )


WORKFLOW = Workflow(
    name="system_test",
    summary="System checks: sleepers that exercise spillover, echo, and database round trips.",
    modes={"stress_supervisor": stress_supervisor, "debug": debug, "crud": crud},
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    raise SystemExit(WORKFLOW.main())
