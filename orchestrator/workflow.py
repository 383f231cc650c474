"""Workflows: each `workflows/<name>/plan.py` turns CLI arguments into a manifest.

A plan module defines `WORKFLOW = Workflow(...)`: a name, its modes (each a function
from the parsed options to job specs) and the options it takes. Discovery imports the
plan modules of the installed `workflows` package; nothing else needs registering. The
same module also runs on its own (`python workflows/<name>/plan.py ...`).

A workflow brings its own code (in its package) and, if it needs any, its own
`orchestrator` subcommands: `Workflow(register_commands=...)` is called with the CLI's
subparsers, as a core command module's `register` is. The core knows no workflow.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import run_cli
from orchestrator.job import JobSpec, job_count
from orchestrator.manifest import ManifestWriter, get_next_filename
from orchestrator.registry import TaskRegistry, task_registry

WORKFLOWS_PACKAGE = "workflows"

Planner = Callable[[argparse.Namespace], Iterable[JobSpec]]
# Adds subcommands to `orchestrator`; its argument is argparse's subparsers action.
CommandRegistrar = Callable[[Any], None]


class NothingToPlan(Exception):
    """Raised by a planner that found no work to do: the plan ends well (exit 0) with
    this message, and writes no manifest (an empty one could only fail to dispatch)."""


@dataclass(frozen=True)
class PlanResult:
    path: Path
    mode: str
    count: int
    tasks: dict[str, int]

    def summary(self) -> str:
        tasks = ", ".join(f"{name} x{n}" for name, n in sorted(self.tasks.items()))
        return f"wrote {self.path}: {job_count(self.count)} ({tasks}), mode {self.mode}"


@dataclass(frozen=True)
class Workflow:
    name: str
    summary: str
    modes: Mapping[str, Planner]
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda parser: None)
    # The workflow's own `orchestrator` subcommands, if any: like a core command
    # module's `register(commands)`, it adds its parsers and sets `command=` on them.
    register_commands: CommandRegistrar | None = None

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this workflow's options (its modes, with their docstrings, and its own)."""
        modes = "; ".join(
            f"{name}: {(inspect.getdoc(planner) or '').splitlines()[0]}"
            for name, planner in self.modes.items()
        )
        parser.add_argument(
            "--mode",
            choices=list(self.modes),
            default=next(iter(self.modes)),
            help=f"what to plan (default: %(default)s). {modes}",
        )
        parser.add_argument(
            "--manifests-dir",
            type=Path,
            default=None,
            help="where to write the manifest (default: the manifests_dir setting, ./manifests)",
        )
        self.add_arguments(parser)

    def plan(
        self,
        options: argparse.Namespace,
        manifests_dir: Path,
        registry: TaskRegistry,
        *,
        pools: Collection[str] | None = None,
    ) -> PlanResult:
        """Write the manifest of `options.mode` under a fresh versioned name (`pools`:
        the configured pools, which a `meta.pool` must name).

        A planner that finds no work raises `NothingToPlan`, which passes through here
        once the writer has given the reserved name back.
        """
        mode: str = options.mode
        path = get_next_filename(self.name, mode, manifests_dir)
        with ManifestWriter(path, registry, pools=pools) as writer:
            for line in self.modes[mode](options):
                # Provenance on every line, so receipts and `verify` can group by it.
                meta = cast(dict[str, Any], line.setdefault("meta", {}))
                meta.setdefault("workflow", self.name)
                meta.setdefault("mode", mode)
                writer.write(line)
        return PlanResult(path, mode, writer.count, dict(writer.tasks))

    def run(
        self,
        options: argparse.Namespace,
        manifests_dir: Path,
        registry: TaskRegistry,
        *,
        pools: Collection[str] | None = None,
    ) -> str:
        """`plan`, as the one line a user reads: what was written, or why nothing was."""
        try:
            return self.plan(options, manifests_dir, registry, pools=pools).summary()
        except NothingToPlan as nothing:
            return str(nothing)

    def main(self, argv: list[str] | None = None) -> int:
        """`python workflows/<name>/plan.py ...`: the planner on its own."""
        from orchestrator.suggest import SuggestingParser

        parser = SuggestingParser(
            prog=f"python workflows/{self.name}/plan.py", description=self.summary
        )
        self.configure(parser)
        options = parser.parse_args(argv)

        def plan() -> int:
            from orchestrator.settings import load_settings

            settings = load_settings()
            directory = options.manifests_dir or settings.manifests_dir
            registry = task_registry(tuple(settings.task_packages))
            print(self.run(options, directory, registry, pools=settings.pool_names))
            return 0

        return run_cli(plan)


def positive_int(text: str) -> int:
    """An argparse type for counts and limits: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def discover_workflows(package: str = WORKFLOWS_PACKAGE) -> dict[str, Workflow]:
    """Every `<package>/<name>/plan.py` that defines `WORKFLOW`, by name; the first
    that fails to load raises."""
    found, broken = load_workflows(package)
    if broken:
        raise next(iter(broken.values()))
    return found


def load_workflows(
    package: str = WORKFLOWS_PACKAGE,
) -> tuple[dict[str, Workflow], dict[str, Exception]]:
    """Every workflow of `package` that loads, by name, and why each other one did not:
    one broken workflow must not take the others (or the whole CLI) down with it."""
    root = importlib.import_module(package)
    found: dict[str, Workflow] = {}
    broken: dict[str, Exception] = {}
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        try:
            workflow = _load(f"{package}.{info.name}.plan", info.name)
        except Exception as exc:  # anything its import runs may raise
            broken[info.name] = exc
        else:
            found[workflow.name] = workflow
    return found, broken


def _load(module_name: str, name: str) -> Workflow:
    module = importlib.import_module(module_name)
    workflow = getattr(module, "WORKFLOW", None)
    if not isinstance(workflow, Workflow):
        raise TypeError(f"{module.__name__} defines no WORKFLOW = Workflow(...)")
    if workflow.name != name:
        raise ValueError(f"{module.__name__}: WORKFLOW.name must be {name!r}")
    return workflow


def describe_error(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
