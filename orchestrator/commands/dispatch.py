"""`orchestrator dispatch MANIFEST --backlog NAME`: validate, then queue every job once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.commands.common import add_common_options, backlog_arg, run_async
from orchestrator.errors import EXIT_OK
from orchestrator.job import PRIORITY_MAX, PRIORITY_MIN
from orchestrator.keys import BACKLOG_PREFIX, Keys
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.dispatch.manifests import DispatchResult

ORDER = 20


def register(commands: Any) -> None:
    dispatch = commands.add_parser(
        "dispatch",
        help="validate a manifest and queue its jobs on a backlog",
        description=(
            "Validate every line of MANIFEST, then queue its jobs on a Redis backlog. "
            "Nothing is queued if any line is bad. Each job is queued once: dispatching "
            "the same manifest again queues nothing new (and finishes an interrupted run)."
        ),
    )
    dispatch.add_argument("manifest", type=Path, metavar="MANIFEST", help="a .jsonl manifest")
    dispatch.add_argument(
        "--backlog",
        required=True,
        type=backlog_arg,
        help="backlog to queue on, e.g. backlog:stress (a bare 'stress' means the same)",
    )
    dispatch.add_argument(
        "--batch",
        help=(
            "batch name, and prefix of derived job ids: letters, digits and _ . : - "
            "(default: the file's stem)"
        ),
    )
    dispatch.add_argument(
        "--priority",
        type=_priority,
        metavar="N",
        help=(
            f"give every job of the batch priority N ({PRIORITY_MIN}..{PRIORITY_MAX}), over "
            "each line's meta.priority. Conductors take a backlog's higher priorities "
            "first, equal ones in the order queued; without this flag each job has its "
            "line's meta.priority, default 0. Each level in use is one more Redis list"
        ),
    )
    dispatch.add_argument(
        "--keep",
        type=_duration,
        metavar="DURATION",
        help="keep the batch in Redis this long once settled (30d, 12h, 5s, or never), "
        "over the batch_retention setting; then it is archived and removed",
    )
    dispatch.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="BATCH",
        help=(
            "hold the batch until batch BATCH has settled (repeatable: until every one "
            "has); none of its jobs is routed before. `orchestrator release` lets it go"
        ),
    )
    dispatch.add_argument(
        "--after-policy",
        choices=["hold", "run", "cancel"],
        default="hold",
        help=(
            "when an awaited batch settles with failures: hold (default: stay held, "
            "visible, until `orchestrator release` or a cancel), run anyway, or cancel"
        ),
    )
    dispatch.add_argument("--dry-run", action="store_true", help="validate only; queue nothing")
    add_common_options(dispatch)
    dispatch.set_defaults(command=_dispatch)


def _dispatch(options: argparse.Namespace, settings: Settings) -> int:
    import sys

    from orchestrator import tracing
    from orchestrator.commands.progress import LineProgress
    from orchestrator.connection import connect
    from orchestrator.dispatch.manifests import dispatch_manifest
    from orchestrator.eviction import check_eviction
    from orchestrator.job import job_count
    from orchestrator.registry import task_registry

    progress = LineProgress()
    registry = task_registry(tuple(settings.task_packages))

    async def dispatch() -> DispatchResult:
        async def to(redis: Any) -> DispatchResult:
            if tracing.enabled and not options.dry_run:
                return await traced(redis)
            return await untraced(redis)

        async def traced(redis: Any) -> DispatchResult:
            """One PRODUCER span for the whole manifest, the parent of every job's trace
            (`tracing`): nothing per job, where a span per job would halve dispatch's
            throughput. Its context is recorded on the batch for the conductors."""
            attributes = tracing.messaging(
                "send", "send", options.backlog, **{
                    "orchestrator.batch": options.batch or options.manifest.stem,
                    "orchestrator.manifest": str(options.manifest),
                },
            )  # fmt: skip
            name = f"send {options.backlog}"
            with tracing.span(name, kind="producer", attributes=attributes) as span:
                result = await untraced(redis)
                span.set_attribute("messaging.batch.message_count", result.queued)
                return result

        async def untraced(redis: Any) -> DispatchResult:
            return await dispatch_manifest(
                redis,
                Keys(settings.namespace),
                options.manifest,
                options.backlog,
                registry,
                batch=options.batch,
                max_line_bytes=settings.max_line_bytes,
                dry_run=options.dry_run,
                progress=progress,
                pools=settings.pool_names,
                priority=options.priority,
                keep=options.keep,
                after=options.after,
                after_policy=options.after_policy,
            )

        if options.dry_run:
            return await to(None)  # a dry run never touches Redis
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-dispatch"
        ) as redis:
            await check_eviction(
                redis, settings.redis_url, refuse=False, allowed=True, unknown=False,
                warn=lambda line: print(f"orchestrator: warning: {line}", file=sys.stderr),
            )  # fmt: skip
            await _warn_if_new(redis, Keys(settings.namespace), options.backlog, settings)
            done = await to(redis)
            if done.queued:
                await _confirm_replicated(redis, Keys(settings.namespace), done.batch)
                await _warn_if_no_worker_runs(redis, Keys(settings.namespace), settings, done)
            return done

    try:
        result = run_async(dispatch)
    finally:
        progress.close()
    where = f"{result.manifest} (batch {result.batch})"
    at = "" if result.priority is None else f" at priority {result.priority}"
    if result.dry_run:
        print(f"{where} is valid: {job_count(result.total)}; dry run, nothing queued")
    elif result.queued == 0:
        every = "the 1 job" if result.total == 1 else f"all {result.total} jobs"
        was = "was" if result.total == 1 else "were"
        print(f"nothing new: {every} of {where} {was} already on {result.backlog}")
    elif result.already_queued:
        was = "was" if result.already_queued == 1 else "were"
        print(
            f"queued {job_count(result.queued)} of {where} on {result.backlog}{at}; "
            f"{result.already_queued} {was} already queued"
        )
    else:
        print(f"queued {job_count(result.queued)} of {where} on {result.backlog}{at}")
    if options.after and not result.dry_run:
        print(
            f"held until {', '.join(options.after)} settled (--after-policy {options.after_policy})"
        )
    return EXIT_OK


def _duration(text: str) -> float:
    from orchestrator.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _warn_if_new(redis: Any, keys: Keys, backlog: str, settings: Settings) -> None:
    """A backlog neither configured nor ever dispatched to, whose name is one letter or
    two from a known one, is most often a typo: say so, with that name, before its jobs
    land there (conductors pick a new backlog up from this dispatch, so they still run,
    from a stray list). A new name close to none is a new backlog, and says nothing."""
    import difflib
    import sys

    known = set(settings.backlogs) | {name.decode() for name in await redis.smembers(keys.backlogs)}
    if backlog in known:
        return
    bare = {name.removeprefix(BACKLOG_PREFIX): name for name in known}
    typed = backlog.removeprefix(BACKLOG_PREFIX)
    close = difflib.get_close_matches(typed, sorted(bare), n=1, cutoff=0.75)
    if close:
        print(
            f"orchestrator: warning: {backlog} is a new backlog; did you mean "
            f"{bare[close[0]]}? (known: {', '.join(sorted(known))})",
            file=sys.stderr,
        )


async def _confirm_replicated(redis: Any, keys: Keys, batch: str) -> None:
    """The jobs are queued: waiting for the replicas to have them is a safeguard, said
    when it falls short, never a failure of the dispatch (running it again is safe)."""
    import sys

    from redis.exceptions import RedisError

    from orchestrator.connection import REPLICA_WAIT, replicated

    try:
        behind = await replicated(redis, keys.batch(batch))
    except RedisError as exc:
        behind, why = -1, f": {exc}"
    else:
        why = ""
    if behind:
        print(
            f"orchestrator: warning: the jobs are queued, but not yet on every replica "
            f"after {REPLICA_WAIT:g} s{why}: a failover now could lose them "
            "(dispatching again is safe)",
            file=sys.stderr,
        )


async def _warn_if_no_worker_runs(
    redis: Any, keys: Keys, settings: Settings, done: DispatchResult
) -> None:
    """Workers load their tasks when they start: a task added to the code while they run
    is one no live worker runs, and its jobs wait (parked by the conductor) until one
    does. Said when workers are up but none announces the task; with no worker at all,
    `status` and `verify --wait` say it."""
    import sys

    from orchestrator.announced import ANY, announced_tasks

    announced = await announced_tasks(redis, keys, settings.pool_names)
    if not announced or ANY in announced:
        return
    if missing := sorted(done.tasks - announced):
        which = ", ".join(missing)
        print(
            f"orchestrator: warning: no live worker runs {which}: its jobs wait until one "
            "does (workers load their tasks when they start: restart them, or `up`)",
            file=sys.stderr,
        )


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: a priority is {PRIORITY_MIN}..{PRIORITY_MAX}"
        )
    return value
