"""One tick's planning and dispatch, in a child process of whoever fires it.

Run as `python -m orchestrator.schedules.planner` with a JSON request on stdin; prints
one JSON line (`{"outcome": "dispatched", "batch": …, "manifest": …, "queued": …}` or
`{"outcome": "nothing", "detail": …}`) and exits 0, or says why on stderr and exits
non-zero. A child, so that a slow planner (a large database to scan) never stalls a
conductor's routing, can be stopped at its time limit, and the conductor never imports
workflow or task code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def main() -> int:
    import anyio

    from orchestrator.connection import connect
    from orchestrator.dispatch.manifests import dispatch_manifest
    from orchestrator.errors import UserError
    from orchestrator.keys import Keys
    from orchestrator.registry import task_registry
    from orchestrator.schedule import parse_plan_args
    from orchestrator.workflow import NothingToPlan, describe_error, load_workflows

    request = orjson.loads(sys.stdin.buffer.read())
    workflows, broken = load_workflows()
    if request["workflow"] not in workflows:
        why = broken.get(request["workflow"])
        said = describe_error(why) if why else "unknown"
        print(
            f"workflow {request['workflow']} not loaded: {said}",
            file=sys.stderr,
        )
        return 1
    workflow = workflows[request["workflow"]]
    options = parse_plan_args(workflow, request["args"])
    registry = task_registry(tuple(request["task_packages"]))
    directory = options.manifests_dir or Path(request["manifests_dir"])
    try:
        planned = workflow.plan(options, directory, registry, pools=request["pools"])
    except NothingToPlan as nothing:
        print(orjson.dumps({"outcome": "nothing", "detail": str(nothing)}).decode())
        return 0
    print(planned.summary(), file=sys.stderr)

    async def dispatch() -> Any:
        async with connect(
            request["redis_url"], namespace=request["namespace"], name="orchestrator-schedule"
        ) as redis:
            return await dispatch_manifest(
                redis,
                Keys(request["namespace"]),
                planned.path,
                request["backlog"],
                registry,
                batch=request["batch"],
                max_line_bytes=request["max_line_bytes"],
                pools=request["pools"],
                after=request["after"],
                after_policy=request["after_policy"],
            )

    try:
        done = anyio.run(dispatch)
    except UserError as exc:
        print(f"dispatch of {planned.path}: {exc.message}", file=sys.stderr)
        return 1
    result = {
        "outcome": "dispatched", "batch": done.batch, "manifest": str(planned.path),
        "total": done.total, "queued": done.queued,
    }  # fmt: skip
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
