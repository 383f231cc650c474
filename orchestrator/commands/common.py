"""What every command shares: the common options, argument types, the async runner."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from orchestrator.keys import backlog_name
from orchestrator.settings import Settings
from orchestrator.workflow import positive_int

__all__ = [
    "Command",
    "add_common_options",
    "add_wait_option",
    "backlog_arg",
    "positive_int",
    "run_async",
    "waited_for_redis",
]

Command = Callable[[argparse.Namespace, Settings], int]


def add_common_options(parser: argparse.ArgumentParser) -> None:
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
        help=(
            "Redis URL (default: $REDIS_URL, else the stack a running `orchestrator up` "
            "recorded in ./data, else redis://127.0.0.1:6379/0)"
        ),
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


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    """`--wait-for-redis`, for the services (worker, conductor, web)."""
    parser.add_argument(
        "--wait-for-redis",
        action="store_true",
        help="when Redis does not answer at start, log redis_unavailable once and try "
        "again (every 0.5 s, backing off to 5 s) until it does, instead of exiting 69 "
        "(`orchestrator up` starts its children so: it has just seen Redis answer)",
    )


async def waited_for_redis(options: argparse.Namespace, settings: Settings, name: str) -> bool:
    """Whether to go on starting the service: True at once without `--wait-for-redis`,
    else once Redis answers; False when SIGTERM or SIGINT came first (a stop asked for
    while it waited: nothing was started, so nothing to drain)."""
    if not getattr(options, "wait_for_redis", False):
        return True
    import signal

    import structlog

    from orchestrator.connection import wait_for_redis
    from orchestrator.logs import RedisOutage

    log = structlog.get_logger(f"orchestrator.{name}")
    answered = False
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tasks:

            async def on_signal() -> None:
                async for signum in signals:
                    log.info("stopped_waiting_for_redis", signal=signal.Signals(signum).name)
                    tasks.cancel_scope.cancel()

            tasks.start_soon(on_signal)
            await wait_for_redis(
                settings.redis_url, RedisOutage(log), name=f"orchestrator-{name}",
                namespace=settings.namespace,
            )  # fmt: skip
            answered = True
            tasks.cancel_scope.cancel()
    return answered


def backlog_arg(text: str) -> str:
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
