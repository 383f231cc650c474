"""`orchestrator cancel BATCH… | --job ID… [--running]`: stop dispatched work for good."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import orjson

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_OK, UserError
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.control.cancel import CancelReport

ORDER = 62
WHERE = {
    "held": "held by --after",
    "backlog": "backlog",
    "waiting": "waiting for a full pool",
    "no_worker": "waiting for a worker",
    "deferred": "deferred",
    "ready": "ready list",
    "taken": "taken by a conductor",
    "pool_queue": "pool queues",
}


def register(commands: Any) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="cancel a batch's jobs (or single jobs) wherever they wait; --running stops "
        "running ones too",
        description=(
            "Cancel every job of the named batches that has not run yet, wherever it waits "
            "(backlogs, the ready and deferred lists, jobs waiting for a full pool or for "
            "a worker, conductors' hands, the pools' queues): each gets a receipt with "
            "status `cancelled`, which `verify` and `status` count apart from failures. "
            "Once this returns, none of them starts anywhere. Running jobs finish unless "
            "--running is given, which stops them too (their receipt says cancelled; they "
            "are not retried). Other batches are untouched. Cancelling again is harmless; "
            "`orchestrator retry BATCH --cancelled` puts cancelled jobs back in line."
        ),
        epilog="Exit status: 0 done, 2 an unknown batch or job id (nothing is cancelled).",
    )
    cancel.add_argument("batches", nargs="*", metavar="BATCH", help="batch ids to cancel")
    cancel.add_argument(
        "--job",
        dest="jobs",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID",
        help="cancel these jobs only; each is found by id in whatever batch holds it now",
    )
    cancel.add_argument(
        "--running",
        action="store_true",
        help="also stop the jobs that are running now (the task is cancelled on its worker)",
    )
    cancel.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="S",
        help="with --running, how long to wait for running jobs to stop (default: 30)",
    )
    cancel.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_common_options(cancel)
    cancel.set_defaults(command=_cancel)


def _cancel(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.control.cancel import Canceller

    if bool(options.batches) == bool(options.jobs):
        raise UserError("cancel: name batches (cancel BATCH…) or jobs (cancel --job ID…), not both")
    if options.wait < 0:
        raise UserError(f"--wait: must be 0 or more seconds, got {options.wait:g}")

    async def run() -> CancelReport:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-cancel"
        ) as redis:
            canceller = Canceller(redis, settings)
            if options.batches:
                return await canceller.batches(
                    options.batches, running=options.running, wait=options.wait
                )
            return await canceller.jobs(options.jobs, running=options.running, wait=options.wait)

    report = run_async(run)
    if options.json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(_describe(report))
    return EXIT_OK


def _describe(report: CancelReport) -> str:
    from orchestrator.job import job_count

    what = (
        "batch " + ", ".join(report.batches) if report.batches else "job " + ", ".join(report.jobs)
    )
    places = [f"{WHERE[place]} {n}" for place, n in report.removed.items() if n]
    if report.claimed:
        places.append(f"claimed by a worker {report.claimed}")
    if report.on_the_way:
        places.append(f"on their way, stopped at their next step {report.on_the_way}")
    lines = [
        f"{what}: cancelled {job_count(report.cancelled)}"
        + (f" ({', '.join(places)})" if places else "")
    ]
    if report.already:
        lines.append(f"  already cancelled before: {', '.join(report.already)}")
    for job_id, status in report.finished.items():
        lines.append(f"  {job_id}: already finished ({status}), left as it is")
    if report.stopped:
        lines.append(f"  stopped {job_count(report.stopped)} running")
    if report.still_running:
        shown = ", ".join(report.still_running[:10])
        lines.append(
            f"  still running after the wait: {job_count(len(report.still_running))} ({shown}); "
            "they are stopped as soon as their worker checks"
        )
    if report.left_running:
        lines.append(
            f"  {job_count(report.left_running)} running left to finish (--running stops them too)"
        )
    return "\n".join(lines)
