"""`orchestrator demo`: plan, dispatch, watch and verify a rehearsal on a throw-away stack."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import add_common_options, positive_int, run_async
from orchestrator.commands.verify import render_report
from orchestrator.settings import Settings

ORDER = 5


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="see it work: a short stress test on a throw-away stack (under a minute)",
        description=(
            "Start an embedded Redis (or use REDIS_URL, under a fresh namespace), a "
            "conductor, a metal pool of 4 slots and a cloud pool of 8; plan a "
            "stress_supervisor rehearsal of short sleepers, dispatch it, show the live view "
            "while metal fills and cloud takes the overflow, verify it, stop everything."
        ),
    )
    demo.add_argument("--jobs", type=positive_int, default=20, help="sleepers to run (20)")
    demo.add_argument("--min-seconds", type=float, default=2.0, help="shortest sleep (2)")
    demo.add_argument("--max-seconds", type=float, default=4.0, help="longest sleep (4)")
    add_common_options(demo)
    demo.set_defaults(command=_demo, uses_stack=False)


def _demo(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.stack.demo import run_demo

    seconds = (options.min_seconds, options.max_seconds)
    report = run_async(lambda: run_demo(settings, jobs=options.jobs, seconds=seconds))
    render_report(report, None)
    code: int = report.exit_code
    return code
