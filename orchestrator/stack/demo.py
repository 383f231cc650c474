"""The newcomer's first run: the whole lifecycle on a throw-away stack, in under a minute.

Plan a short `stress_supervisor` rehearsal, dispatch it, watch metal fill and cloud take
the overflow, verify, and stop everything. Against an embedded Redis in a temporary
directory (removed afterwards) unless REDIS_URL is set; then under a fresh namespace of
its own, so it touches nothing of yours.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import anyio
from redis.asyncio import Redis
from rich.console import Console
from rich.live import Live

from orchestrator.connection import connect
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.job import job_count
from orchestrator.keys import Keys
from orchestrator.money import money
from orchestrator.registry import task_registry
from orchestrator.scaling.launches import LIVE, read_launches, spend_today
from orchestrator.scaling.scaler import TICK as SCALER_TICK
from orchestrator.settings import Settings
from orchestrator.stack.local import StackPlan, local_stack, with_local_scaler
from orchestrator.stack.redis_server import free_port
from orchestrator.status.snapshot import Snapshot, StatusReader
from orchestrator.status.view import render
from orchestrator.verify.cost import pool_prices
from orchestrator.verify.verifier import Report, Verifier, write_report
from orchestrator.workflow import discover_workflows

BACKLOG = "backlog:stress"
FRAME_EVERY = 0.25  # seconds between two looks at the stack while the batch runs
METAL, CLOUD = 4, 8


async def run_demo(settings: Settings, *, jobs: int, seconds: tuple[float, float]) -> Report:
    console = Console(highlight=False)
    embedded = "redis_url" not in settings.model_fields_set
    namespace = settings.namespace if embedded else f"demo{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(
        update={"namespace": namespace, "heartbeat_interval": 1.0, "backlogs": [BACKLOG]}
    )
    settings, pools_env = with_local_scaler(settings, "cloud", CLOUD)
    registry = task_registry(tuple(settings.task_packages))
    with tempfile.TemporaryDirectory(prefix="orchestrator-demo-") as tmp:
        work = Path(tmp)
        log = (work / "stack.log").open("wb")
        plan = StackPlan(
            concurrency={"metal": METAL, "cloud": CLOUD},
            data_dir=work,
            redis_port=free_port(),
            env={
                "ORCHESTRATOR_NAMESPACE": namespace,
                "ORCHESTRATOR_HEARTBEAT_INTERVAL": "1",
                "ORCHESTRATOR_BACKLOGS": f'["{BACKLOG}"]',
                "ORCHESTRATOR_LOG_FORMAT": "json",
                **pools_env,
            },
            output=log,
            started_by="orchestrator demo",
        )
        console.print(f"[bold]starting[/] Redis ({'embedded' if embedded else 'yours'}), "
                      f"a conductor and metal x{METAL} slots; cloud workers (up to {CLOUD} "
                      "slots) are launched only when metal is full…")  # fmt: skip
        async with (
            local_stack(settings, plan) as stack,
            connect(stack.redis_url, namespace=settings.namespace) as redis,
        ):
            keys = Keys(namespace)
            await _until_workers(redis, keys)
            manifest = await anyio.to_thread.run_sync(
                _plan, settings.manifests_dir, registry, jobs, seconds
            )
            console.print(f"[bold]planned[/] {manifest}: {jobs} sleepers of "
                          f"{seconds[0]:g}-{seconds[1]:g} s")  # fmt: skip
            result = await dispatch_manifest(redis, keys, manifest, BACKLOG, registry)
            console.print(f"[bold]dispatched[/] {job_count(result.queued)} on {BACKLOG}: "
                          "metal first, cloud for the overflow")  # fmt: skip
            verifier = Verifier(redis, keys, manifest, registry, prices=pool_prices(settings))
            report = await _watch(console, StatusReader(redis, settings), verifier)
            await write_report(manifest, report.to_json())
            console.print(await _cloud_bill(redis, keys, settings, report))
            console.print("[bold]stopping[/] the stack…")
        log.close()
    return report


def _plan(directory: Path, registry: object, jobs: int, seconds: tuple[float, float]) -> Path:
    workflow = discover_workflows()["system_test"]
    options = argparse.Namespace(
        mode="stress_supervisor", count=jobs, seed=None,
        min_seconds=seconds[0], max_seconds=seconds[1], database=None,
    )  # fmt: skip
    return workflow.plan(options, directory, registry).path  # type: ignore[arg-type]


async def _until_workers(redis: Redis, keys: Keys) -> None:
    with anyio.fail_after(30):
        while True:
            if await redis.scard(keys.workers("metal")):  # type: ignore[misc]
                return
            await anyio.sleep(0.1)


async def _cloud_bill(redis: Redis, keys: Keys, settings: Settings, report: Report) -> str:
    """Once the scaler released them: the cloud bill in the two figures the other
    commands show, each counted one way only: the batch's cost (its jobs' share of
    worker time, as `verify` counts it) and the day's spend (workers paid from launch
    until they leave, idle included, as `status` and the dashboard count it)."""
    scaler = next(p.scaler for p in settings.pools if p.name == "cloud" and p.scaler)
    with anyio.move_on_after(scaler.idle_release_after + 10):
        while True:
            if not any(r["state"] in LIVE for r in await read_launches(redis, keys, "cloud")):
                break
            await anyio.sleep(0.2)
    await anyio.sleep(2 * SCALER_TICK)  # the scaler's last accrual, for the gone workers
    launched = len(await read_launches(redis, keys, "cloud"))
    cost = report.usage.cost("cloud") or 0.0
    spend = await spend_today(redis, keys, "cloud", time.time())
    return (
        f"[bold]cloud:[/] {launched} worker{'' if launched == 1 else 's'} launched; "
        f"batch cost {money(cost)}, spend today {money(spend)} "
        f"at {money(scaler.price_per_worker_hour)}/h"
    )


async def _watch(console: Console, reader: StatusReader, verifier: Verifier) -> Report:
    """The live view until the batch settles; off a terminal, the frame that shows the
    spillover best and the last one are printed instead."""
    busiest: tuple[int, Snapshot] | None = None
    # Off a terminal a Live would print its last frame when it ends, before the peak:
    # there, nothing is drawn until the peak frame is printed, once.
    live = Live(console=console, auto_refresh=False, transient=False)
    drawing = console.is_terminal
    with live if drawing else nullcontext():
        while True:
            snapshot = await reader.read()
            if drawing:
                live.update(
                    render(snapshot, width=min(console.width, 100), note="demo"), refresh=True
                )
            # The frame that tells the story best: the first pool full, most spilled.
            first_full = int(snapshot.pools[0].free == 0) if snapshot.pools else 0
            spilled = first_full * 1_000_000 + sum(p.in_flight for p in snapshot.pools[1:])
            if busiest is None or spilled >= busiest[0]:  # ties: the later, fuller frame
                busiest = (spilled, snapshot)
            report = await verifier.check()
            if not report.may_change:
                break
            # Often enough to catch a spill of jobs of a few seconds on a busy machine (at
            # 0.5 s a CI run once sampled none: metal full and cloud running never met).
            await anyio.sleep(FRAME_EVERY)
        if busiest is not None and drawing:
            # Leave the moment that tells the story on screen, not the idle end.
            live.update(render(busiest[1], width=min(console.width, 100),
                               note="the peak of the spillover"), refresh=True)  # fmt: skip
    if not drawing and busiest is not None:
        console.print()
        console.print("[bold]at the peak of the spillover:[/]")
        console.print(render(busiest[1], width=100, note="peak"))
    return report
