"""`orchestrator retry BATCH [--failed] [--cancelled]`: run a batch's misses again."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import orjson

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_FAILURE, EXIT_OK
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.control.retry import RetryReport

ORDER = 64
SAID = {
    "live": "still held by arq (finishing): left",
    "gone": "retried meanwhile by someone else",
    "ended": "ran to an end after all: left",
    "refused": "no envelope to queue again (see `dlq show`)",
}


def register(commands: Any) -> None:
    retry = commands.add_parser(
        "retry",
        help="put a batch's failed, dead-lettered or cancelled jobs back in line",
        description=(
            "Put the batch's jobs that did not succeed back in line under their own ids, "
            "ahead of the backlogs, with arq's state of their earlier run cleared: failed "
            "and dead-lettered jobs from their dead letters (as `dlq requeue` does), "
            "cancelled ones from what `cancel` kept — which also lifts the batch's cancel. "
            "With neither flag, both kinds. `verify` counts them pending until they run."
        ),
        epilog="Exit status: 0 done, 1 some jobs could not be queued again, 2 unknown batch.",
    )
    retry.add_argument("batch", metavar="BATCH", help="the batch id (as `status` shows it)")
    retry.add_argument("--failed", action="store_true", help="failed and dead-lettered jobs")
    retry.add_argument("--cancelled", action="store_true", help="cancelled jobs")
    retry.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_common_options(retry)
    retry.set_defaults(command=_retry)


def _retry(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.control.retry import retry_batch
    from orchestrator.keys import Keys

    both = not options.failed and not options.cancelled

    async def run() -> RetryReport:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-retry"
        ) as redis:
            return await retry_batch(
                redis,
                Keys(settings.namespace),
                options.batch,
                failed=options.failed or both,
                cancelled=options.cancelled or both,
            )

    report = run_async(run)
    if options.json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(_describe(report))
    stuck = report.no_record or report.failed["refused"] + report.cancelled["refused"]
    return EXIT_FAILURE if stuck else EXIT_OK


def _describe(report: RetryReport) -> str:
    from orchestrator.job import job_count

    parts = []
    if report.failed["requeued"]:
        parts.append(f"{report.failed['requeued']} failed")
    if report.cancelled["requeued"]:
        parts.append(f"{report.cancelled['requeued']} cancelled")
    lines = [
        f"batch {report.batch}: requeued {job_count(report.requeued)}"
        + (f" ({', '.join(parts)})" if parts else "")
    ]
    for outcome, said in SAID.items():
        count = report.failed[outcome] + report.cancelled[outcome]
        if count:
            lines.append(f"  {job_count(count)} {said}")
    if report.no_record:
        shown = ", ".join(report.no_record[:10])
        lines.append(
            f"  {job_count(len(report.no_record))} failed with no dead letter left (purged): "
            f"{shown}; dispatch them anew"
        )
    return "\n".join(lines)
