"""Errors a user can cause, and the exit codes they end in.

The CLI turns a `UserError` into one line on stderr and its exit code; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# sysexits-style codes, so scripts can tell "fix your input" from "try again later".
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input, bad manifest, bad config
EXIT_UNAVAILABLE = 69  # Redis (or another service) cannot be reached
# `verify`: the batch settled with failures, or is not settled yet.
EXIT_JOBS_FAILED = 1
EXIT_JOBS_PENDING = 3


class UserError(Exception):
    """Something the user can fix; the message is the whole story, on one line."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(UserError):
    """A setting is invalid: the message names the field and where it came from."""


class ManifestError(UserError):
    """A manifest line is invalid: the message is `file:line: field: reason`."""

    def __init__(self, path: str, line: int | None, field: str, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason


class UnknownTaskError(UserError):
    """A task name outside the registry (the allow-list)."""


class ServiceUnavailable(UserError):
    """Redis cannot be reached or refused us; retrying later may help."""

    exit_code = EXIT_UNAVAILABLE


class RedisUnreachable(ServiceUnavailable):
    """Redis did not answer (refused, timed out, no master named): it may later, unlike
    a refusal of our credentials or a server that is not Redis."""


def run_cli(command: Callable[[], int]) -> int:
    """Run a CLI command, turning a `UserError` into one stderr line and its exit code."""
    try:
        return command()
    except UserError as exc:
        print(f"orchestrator: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; a user's error is still one line.
        user_error = _only_user_error(group)
        if user_error is None:
            raise
        print(f"orchestrator: error: {user_error.message}", file=sys.stderr)
        return user_error.exit_code
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`orchestrator status --json | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _only_user_error(group: BaseExceptionGroup[BaseException]) -> UserError | None:
    """The first `UserError` of a group holding nothing but user errors (and the
    cancellations they caused), else None: a bug keeps its traceback."""
    import asyncio

    matched, rest = group.split(UserError)
    if matched is None or (
        rest is not None
        and rest.subgroup(lambda e: not isinstance(e, asyncio.CancelledError | BaseExceptionGroup))
        is not None
    ):
        return None
    leaf = first_leaf(matched)
    return leaf if isinstance(leaf, UserError) else None


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error a (nested) task group gathered: most often the one that started it."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
