"""`orchestrator verify MANIFEST`: what became of every job of a batch, and an exit code
a script can act on (0 all succeeded, 1 settled with failures, 3 not settled yet).

`--wait` talks on stderr only: a progress bar on a terminal, and on any stderr a
warning while no conductor or worker is there to settle the batch (`verify/wait.py`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_JOBS_PENDING, UserError
from orchestrator.job import job_count
from orchestrator.keys import Keys
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.verify.sources import ArchivedSource
    from orchestrator.verify.verifier import Report

ORDER = 50


def register(commands: Any) -> None:
    verify = commands.add_parser(
        "verify",
        help="compare a manifest with its receipts: done, failed, pending, missing",
        description=(
            "Read MANIFEST and its batch's receipts and dead letters, print per task how "
            "many jobs are done, failed, dead-lettered, cancelled, pending or missing, which "
            "pool ran them, how long they took and the worker time (and, at a scaler's "
            "price, the cost) they used per pool, and write MANIFEST.verify.json beside "
            "it. Exit 0 when every job succeeded, 1 when the batch settled with failures "
            "or cancelled jobs, 3 while jobs are pending or missing. A batch pruned from "
            "Redis (settled, past its retention) is read from its archive in archive_dir."
        ),
    )
    verify.add_argument(
        "manifest", type=Path, metavar="MANIFEST", nargs="?", help="a dispatched manifest"
    )
    verify.add_argument(
        "--batch",
        help="batch name it was dispatched as (default: the file's stem); alone, without "
        "MANIFEST: a batch by name, e.g. the ad-hoc batch of bare lines a producer pushed "
        "(adhoc:stress:2026-11-30), told from its receipts",
    )
    verify.add_argument("--json", action="store_true", help="print the JSON report, not tables")
    verify.add_argument(
        "--wait",
        action="store_true",
        help=(
            "poll until no job is pending (nor missing while its dispatch is unfinished); "
            "warns on stderr while no conductor or worker is running to settle them"
        ),
    )
    verify.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up waiting after SECONDS, exiting 3 (implies --wait)",
    )
    add_common_options(verify)
    verify.set_defaults(command=_verify)


def _verify(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.registry import task_registry
    from orchestrator.verify.cost import pool_prices
    from orchestrator.verify.verifier import Verifier, write_report
    from orchestrator.verify.wait import StallWarner, wait_until_settled

    registry = task_registry(tuple(settings.task_packages))
    wait = options.wait or options.timeout is not None
    if options.manifest is None and options.batch is None:
        raise UserError("name a MANIFEST, or a batch with --batch NAME")

    async def verify() -> tuple[Report, dict[str, Any], Path | None]:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-verify"
        ) as redis:
            keys = Keys(settings.namespace)
            name = options.batch or options.manifest.stem
            # Pruned (settled, then past its retention): read from its archive instead.
            source = await _archived(redis, keys, settings, name)
            if source is not None and options.manifest is None:
                options.manifest = await _archived_manifest(source)
            elif options.manifest is None and wait:
                options.manifest = await _batch_appears(redis, keys, options.batch, options.timeout)
            elif options.manifest is None:
                options.manifest = await _manifest_of(redis, keys, options.batch)
            verifier = Verifier(
                redis,
                Keys(settings.namespace),
                options.manifest,
                registry,
                batch=options.batch,
                max_line_bytes=settings.max_line_bytes,
                prices=pool_prices(settings),
                source=source,
            )
            if wait:
                with _progress_bar() as (on_pass, warn):
                    pools = settings.pool_names
                    report = await wait_until_settled(
                        verifier.check,
                        patience=options.timeout,
                        on_pass=on_pass,
                        between=StallWarner(redis, verifier.keys, pools, warn),
                    )
            else:
                report = await verifier.check()
            from orchestrator.dispatch.after import held_line

            held = await held_line(redis, keys, report.batch)
        document = report.to_json()
        if held is not None:
            document["held"] = held
        if options.manifest is None:
            return report, document, None
        try:
            return report, document, await write_report(options.manifest, document)
        except OSError as exc:  # the verdict stands without its file
            print(f"orchestrator: warning: cannot write the report: {exc}", file=sys.stderr)
            return report, document, None

    report: Report
    document: dict[str, Any]
    written: Path | None
    report, document, written = run_async(verify)
    if wait and report.may_change:
        from orchestrator.verify.wait import pending_tasks

        totals = report.totals
        which = f" ({pending_tasks(report)})" if totals["pending"] else ""
        print(
            f"orchestrator: gave up waiting after {options.timeout:g} s: "
            f"{totals['pending']} pending{which}, {totals['missing']} missing",
            file=sys.stderr,
        )
    if options.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render_report(report, written)
        if held := document.get("held"):
            print(held)
    return report.exit_code


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


@contextmanager
def _progress_bar() -> Iterator[tuple[Callable[[Report], None] | None, Callable[[str], None]]]:
    """A bar of settled jobs on stderr while waiting, and how to print a warning line.

    No bar when stderr is not a TTY, where it would only fill a log with redraws; the
    warnings are printed either way, above the bar when there is one.
    """
    if not sys.stderr.isatty():
        yield None, _warn
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("settled"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
    )
    console = Console(stderr=True, highlight=False, markup=False)
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("", total=None)

        def on_pass(report: Report) -> None:
            totals = report.totals
            waiting = totals["pending"] + totals["missing"]
            progress.update(
                bar,
                total=totals.total(),
                completed=totals.total() - waiting,
                description=f"{totals['pending']} pending, {totals['missing']} missing",
            )

        yield on_pass, lambda line: progress.console.print(line, soft_wrap=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class NoSuchBatch(UserError):
    """No batch of that name was recorded (yet)."""


class BatchNeverAppeared(UserError):
    """`--wait --timeout` ran out before the batch was recorded: not settled, exit 3."""

    exit_code = EXIT_JOBS_PENDING


async def _batch_appears(redis: Any, keys: Keys, batch: str, patience: float | None) -> Path | None:
    """`--batch NAME --wait`: the batch's manifest once the batch is recorded. A producer's
    bare lines become a batch only when a conductor takes the first of them, so right after
    a push there is no batch yet: wait for it (said once on stderr), within `patience`."""
    from orchestrator.verify.wait import POLL_INTERVAL

    deadline = None if patience is None else time.monotonic() + patience
    said = False
    while True:
        try:
            return await _manifest_of(redis, keys, batch)
        except NoSuchBatch:
            if deadline is not None and time.monotonic() >= deadline:
                raise BatchNeverAppeared(
                    f"gave up waiting after {patience:g} s: no batch named {batch!r} appeared "
                    "(is a conductor running? see `orchestrator status`)"
                ) from None
            if not said:
                _warn(f"orchestrator: waiting for batch {batch!r} to appear")
                said = True
            pause = (
                POLL_INTERVAL
                if deadline is None
                else min(POLL_INTERVAL, deadline - time.monotonic())
            )
            await anyio.sleep(max(pause, 0.0))


async def _archived(
    redis: Any, keys: Keys, settings: Settings, batch: str
) -> ArchivedSource | None:
    """The batch's archive, when the batch is no longer in Redis and its archive is in
    `archive_dir` (the pruner removed it); else None: verify reads Redis."""
    from orchestrator.retention.archive import ArchivedBatch, archive_file
    from orchestrator.verify.sources import ArchivedSource

    if await redis.exists(keys.batch(batch)):
        return None
    path = archive_file(settings.archive_path, batch)
    if not await anyio.Path(path).is_file():
        return None
    try:
        archived = await anyio.to_thread.run_sync(ArchivedBatch.read, path)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return ArchivedSource(archived, path)


async def _archived_manifest(source: ArchivedSource) -> Path | None:
    """The manifest an archived batch was dispatched from, when it is still there: read
    in manifest order, as before its pruning; else (or an ad-hoc batch) by its ids."""
    manifest = source.archived.manifest
    if manifest is None or source.archived.record.get("adhoc"):
        return None
    return Path(manifest) if await anyio.Path(manifest).is_file() else None


async def _manifest_of(redis: Any, keys: Keys, batch: str) -> Path | None:
    """The manifest a batch was dispatched from, None for an ad-hoc batch; a batch that
    was never recorded is one line, exit 2."""
    manifest, adhoc = await redis.hmget(keys.batch(batch), ["manifest", "adhoc"])
    if adhoc:
        return None
    if manifest is None:
        raise NoSuchBatch(f"no batch named {batch!r} in this Redis (see `orchestrator status`)")
    path = Path(manifest.decode())
    if not await anyio.Path(path).is_file():
        raise UserError(
            f"batch {batch!r} was dispatched from {path}, which is not here; "
            "run verify where that manifest is, or pass it: orchestrator verify MANIFEST"
        )
    return path


def render_report(report: Report, written: Path | None) -> None:
    """Tables for a person, kept within 80 columns."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from orchestrator.verify.verifier import OUTCOMES, quantiles

    # No markup: a path or batch name with [brackets] is shown as it is. Soft wrap: a
    # long path stays whole, to copy.
    console = Console(highlight=False, markup=False, soft_wrap=True)
    totals = report.totals
    source = report.manifest or "bare lines, no manifest"
    console.print(f"batch {report.batch} · {source} · {_dispatch_state(report)}")
    if report.archive is not None:
        console.print(f"read from its archive {report.archive} (pruned from Redis)")
    outcomes = Table(box=box.SIMPLE, show_edge=False, show_footer=True)
    outcomes.add_column("task", "all", overflow="fold")
    # `cancelled` only where there are some: most batches never see one.
    shown = [o for o in OUTCOMES if o != "cancelled" or totals["cancelled"]]
    labels = [outcome.replace("_", "-") for outcome in shown]
    for label, outcome in zip(labels, shown, strict=True):
        outcomes.add_column(label, str(totals[outcome]), justify="right")
    outcomes.add_column("total", str(totals.total()), justify="right")
    times = Table(box=box.SIMPLE, show_edge=False)
    times.add_column("task", overflow="fold")
    for heading in ("succeeded", "p50", "p95", "max", "retries"):
        times.add_column(heading, justify="right")
    for name, tally in sorted(report.tasks.items()):
        counts = [str(tally.outcomes[o]) for o in shown]
        outcomes.add_row(name, *counts, str(tally.outcomes.total()))
        times.add_row(name, *_durations(quantiles(tally.durations)), str(tally.retries))
    console.print()
    console.print(outcomes)
    console.print()
    console.print(times)
    console.print()
    ran = [f"{pool} {_counts(statuses)}" for pool, statuses in sorted(report.pools.items())]
    console.print(f"pools: {'; '.join(ran) or 'no job has run to an end'}")
    for line in report.usage.lines():  # wrapped, not cut, at the terminal's width
        console.print(f"  {line}", soft_wrap=False)
    console.print(_verdict(report))
    if written is not None:
        console.print(f"wrote {written}")


def _dispatch_state(report: Report) -> str:
    record, jobs = report.record, job_count(report.totals.total())
    if record is None:
        return f"{jobs}, never dispatched"
    if report.manifest is None:
        return f"{jobs} taken by conductors"
    if record.complete:
        return f"{jobs}, all dispatched"
    return f"{jobs}, dispatch unfinished ({record.queued} queued)"


def _durations(durations: dict[str, float | int] | None) -> list[str]:
    if durations is None:
        return ["0", "-", "-", "-"]
    shown = [f"{durations[name]:.2f}s" for name in ("p50", "p95", "max")]
    return [str(durations["count"]), *shown]


def _counts(statuses: Counter[str]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))


def _verdict(report: Report) -> str:
    totals, total = report.totals, report.totals.total()
    if not report.settled:
        return f"not settled: {totals['pending']} pending, {totals['missing']} missing of {total}"
    bad = totals["failed"] + totals["dead_lettered"]
    if bad:
        cancelled = f", {totals['cancelled']} cancelled" if totals["cancelled"] else ""
        return (
            f"settled with failures: {totals['failed']} failed, "
            f"{totals['dead_lettered']} dead-lettered{cancelled} of {total}"
        )
    if totals["cancelled"]:
        return f"settled, not all run: {totals['cancelled']} cancelled of {total}"
    return "the 1 job succeeded" if total == 1 else f"all {total} jobs succeeded"
