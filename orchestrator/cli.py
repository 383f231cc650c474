"""The `orchestrator` command: plan, dispatch, and (as they land) run and watch.

Every command goes through `run_cli`, so an error a user can cause ends in one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from orchestrator import __version__
from orchestrator.errors import EXIT_OK, UserError, run_cli
from orchestrator.keys import Keys, backlog_name
from orchestrator.logs import configure_logging
from orchestrator.settings import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], int]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    command: Command = options.command

    def run() -> int:
        settings = load_settings(options.config, redis_url=options.redis_url)
        if getattr(options, "service", False):
            # Services: their log is their output.
            configure_logging(options.log_level or settings.log_level, settings.log_format)
        else:
            # One-shot commands keep stdout for their result.
            level = options.log_level or ("info" if options.verbose else "warning")
            configure_logging(level, settings.log_format, sys.stderr)
        return command(options, settings)

    return run_cli(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description=(
            "Hybrid job execution: plan a batch into a manifest, dispatch it to a Redis "
            "backlog, and let the conductor run it on metal first, spilling to cloud."
        ),
        epilog="Settings come from orchestrator.toml, ORCHESTRATOR_* variables and REDIS_URL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common_options(parser)
    parser.set_defaults(config=None, redis_url=None, verbose=False, log_level=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_plan(commands)
    _add_dispatch(commands)
    _add_conductor(commands)
    _add_worker(commands)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command takes, before or after its name.

    On subcommands they default to SUPPRESS so that an option given before the command
    name is not reset by the subparser's own default.
    """
    default = argparse.SUPPRESS if parser.prog != "orchestrator" else None
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help="TOML settings file (default: ./orchestrator.toml)",
    )
    parser.add_argument(
        "--redis-url",
        default=default,
        help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log progress events to stderr",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=default
    )


def _add_plan(commands: Any) -> None:
    from orchestrator.workflow import discover_workflows

    plan = commands.add_parser(
        "plan",
        help="write a workflow's jobs to a new manifest under manifests/",
        description="Plan a batch: write manifests/<workflow>_<mode>_NN.jsonl (never overwriting).",
    )
    workflows = plan.add_subparsers(title="workflows", metavar="WORKFLOW", required=True)
    for name, workflow in discover_workflows().items():
        sub = workflows.add_parser(name, help=workflow.summary, description=workflow.summary)
        workflow.configure(sub)
        _add_common_options(sub)
        sub.set_defaults(command=_plan, workflow=workflow)


def _plan(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.registry import task_registry

    directory = options.manifests_dir or settings.manifests_dir
    result = options.workflow.plan(options, directory, task_registry(tuple(settings.task_packages)))
    print(result.summary())
    return EXIT_OK


def _add_dispatch(commands: Any) -> None:
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
        type=_backlog,
        help="backlog to queue on, e.g. backlog:stress (a bare 'stress' means the same)",
    )
    dispatch.add_argument(
        "--batch", help="batch name, and prefix of derived job ids (default: the file's stem)"
    )
    dispatch.add_argument("--dry-run", action="store_true", help="validate only; queue nothing")
    _add_common_options(dispatch)
    dispatch.set_defaults(command=_dispatch)


def _dispatch(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.dispatch import DispatchResult, dispatch_manifest
    from orchestrator.progress import LineProgress
    from orchestrator.registry import task_registry

    progress = LineProgress()
    registry = task_registry(tuple(settings.task_packages))

    async def dispatch() -> DispatchResult:
        if options.dry_run:
            return await dispatch_manifest(
                None,  # type: ignore[arg-type]  # a dry run never touches Redis
                Keys(settings.namespace),
                options.manifest,
                options.backlog,
                registry,
                batch=options.batch,
                max_line_bytes=settings.max_line_bytes,
                dry_run=True,
                progress=progress,
            )
        async with connect(settings.redis_url, name="orchestrator-dispatch") as redis:
            return await dispatch_manifest(
                redis,
                Keys(settings.namespace),
                options.manifest,
                options.backlog,
                registry,
                batch=options.batch,
                max_line_bytes=settings.max_line_bytes,
                progress=progress,
            )

    try:
        result = run_async(dispatch)
    finally:
        progress.close()
    where = f"{result.manifest} (batch {result.batch})"
    if result.dry_run:
        print(f"{where} is valid: {result.total} jobs; dry run, nothing queued")
    elif result.queued == 0:
        print(f"nothing new: all {result.total} jobs of {where} were already on {result.backlog}")
    elif result.already_queued:
        print(
            f"queued {result.queued} jobs of {where} on {result.backlog}; "
            f"{result.already_queued} were already queued"
        )
    else:
        print(f"queued {result.queued} jobs of {where} on {result.backlog}")
    return EXIT_OK


def _add_conductor(commands: Any) -> None:
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
    _add_common_options(conductor)
    conductor.set_defaults(command=_conductor, service=True)


def _conductor(options: argparse.Namespace, settings: Settings) -> int:
    import signal

    from orchestrator.conductor import Conductor
    from orchestrator.connection import connect
    from orchestrator.registry import task_registry

    registry = task_registry(tuple(settings.task_packages))

    async def conduct() -> None:
        async with connect(settings.redis_url, name="orchestrator-conductor") as redis:
            stop = anyio.Event()
            conductor = Conductor(settings, redis, registry)
            async with anyio.create_task_group() as tasks:

                async def on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            stop.set()
                            return

                tasks.start_soon(on_signal)
                await conductor.run(stop=stop)
                tasks.cancel_scope.cancel()

    run_async(conduct)
    return EXIT_OK


def _add_worker(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run a worker of one pool (an arq worker on the pool's queue)",
        description=(
            "Run the tasks forwarded to POOL, at most --concurrency at once. Publishes a "
            "heartbeat with its slots, writes a receipt per job, retries failures up to "
            "max_tries, and dead-letters what still fails. SIGTERM stops taking jobs and "
            "lets running ones finish within grace_period."
        ),
    )
    worker.add_argument("--pool", required=True, help="pool to serve, e.g. metal or cloud")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=4, help="jobs at once (default: 4)"
    )
    worker.add_argument("--burst", action="store_true", help="exit once the pool's queue is empty")
    _add_common_options(worker)
    worker.set_defaults(command=_worker, service=True)


def _worker(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.worker import run_worker

    run_async(lambda: run_worker(settings, options.pool, options.concurrency, burst=options.burst))
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _backlog(text: str) -> str:
    try:
        return backlog_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_async(function: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on uvloop where available."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return anyio.run(function)
    return anyio.run(function, backend_options={"use_uvloop": True})


__all__ = ["UserError", "build_parser", "main", "run_async"]
