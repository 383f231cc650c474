"""`orchestrator plan WORKFLOW`: write a workflow's jobs to a new manifest."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.commands.common import add_common_options
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings

ORDER = 10


def register(commands: Any) -> None:
    from orchestrator.workflow import load_workflows

    plan = commands.add_parser(
        "plan",
        help="write a workflow's jobs to a new manifest under manifests/",
        description="Plan a batch: write manifests/<workflow>_<mode>_NN.jsonl (never overwriting).",
    )
    workflows = plan.add_subparsers(title="workflows", metavar="WORKFLOW", required=True)
    # A workflow that does not load is left out (the CLI says so, once, on stderr).
    for name, workflow in load_workflows()[0].items():
        sub = workflows.add_parser(name, help=workflow.summary, description=workflow.summary)
        workflow.configure(sub)
        add_common_options(sub)
        sub.set_defaults(command=_plan, workflow=workflow, uses_stack=False)


def _plan(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.registry import task_registry

    directory = options.manifests_dir or settings.manifests_dir
    registry = task_registry(tuple(settings.task_packages))
    print(options.workflow.run(options, directory, registry, pools=settings.pool_names))
    return EXIT_OK
