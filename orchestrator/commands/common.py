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

__all__ = ["Command", "add_common_options", "backlog_arg", "positive_int", "run_async"]

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
