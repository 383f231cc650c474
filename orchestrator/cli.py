"""The `orchestrator` command: plan, dispatch, conduct, work (and, as they land, watch).

Each core subcommand lives in `orchestrator/commands/`; a workflow may add its own
(`Workflow.register_commands`), listed after them. Every command goes through
`run_cli`, so an error a user can cause ends in one line on stderr and a non-zero
exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator import __version__, tracing
from orchestrator.commands import discover
from orchestrator.commands.common import Command, add_common_options, run_async
from orchestrator.errors import run_cli
from orchestrator.logs import configure_logging
from orchestrator.settings import load_settings
from orchestrator.stack.record import resolve_redis
from orchestrator.suggest import SuggestingParser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    command: Command = options.command

    def run() -> int:
        settings = load_settings(options.config, redis_url=options.redis_url)
        if getattr(options, "uses_stack", True):
            # Which Redis: a flag, the environment, the config file, else the stack a
            # running `orchestrator up` recorded here (see stack/record.py).
            settings, options.redis_source = resolve_redis(
                settings, flag=options.redis_url, config_file=options.config
            )
        # Spans, when the OTEL_* environment asks for them (nothing is imported else).
        tracing.setup(getattr(options, "subcommand", None) or "cli")
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
    parser = SuggestingParser(
        prog="orchestrator",
        description=(
            "Hybrid job execution: plan a batch into a manifest, dispatch it to a Redis "
            "backlog, and let the conductor run it on metal first, spilling to cloud."
        ),
        epilog="Settings come from orchestrator.toml, ORCHESTRATOR_* variables and REDIS_URL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common_options(parser)
    parser.set_defaults(config=None, redis_url=None, verbose=False, log_level=None)
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", required=True, dest="subcommand"
    )
    for module in discover():
        module.register(commands)
    add_workflow_commands(commands)
    return parser


def add_workflow_commands(commands: Any) -> None:
    """The workflows' own subcommands. A workflow that fails to load (or to add them)
    costs its own commands and one line on stderr, never the rest of the CLI."""
    from orchestrator.workflow import describe_error, load_workflows

    workflows, broken = load_workflows()
    for name, error in broken.items():
        _warn(
            f"workflow {name} not loaded, its plan and commands left out: {describe_error(error)}"
        )
    for name, workflow in workflows.items():
        if workflow.register_commands is None:
            continue
        try:
            workflow.register_commands(commands)
        except Exception as exc:  # a workflow's bug, or a name another command took
            _warn(f"workflow {name}: its commands not added ({describe_error(exc)})")


def _warn(message: str) -> None:
    print(f"orchestrator: warning: {message}", file=sys.stderr)


__all__ = ["build_parser", "main", "run_async"]
