"""The whole stack on one machine: Redis (embedded unless one is given), a conductor, and
one worker process per pool, supervised as child processes.

`orchestrator up` runs it until Ctrl-C / SIGTERM; `orchestrator demo` runs a batch
through it. Stopping drains: workers get SIGTERM and their grace period to finish
running jobs, the conductor hands back what it holds, and the embedded Redis (append-
only file on) is stopped last, so a second start finds every job where it was.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import structlog
from anyio.abc import Process

from orchestrator.errors import ServiceUnavailable
from orchestrator.redis_server import RedisServer, embedded_redis_server
from orchestrator.settings import Settings, redact_url

log = structlog.get_logger("orchestrator.up")
DEFAULT_REDIS_PORT = 6399


@dataclass
class StackPlan:
    """What to start: worker concurrency per pool, and where the embedded Redis lives."""

    concurrency: Mapping[str, int]
    data_dir: Path = Path("data")
    redis_port: int = DEFAULT_REDIS_PORT
    env: dict[str, str] = field(default_factory=dict)  # extra environment for children
    output: IO[bytes] | None = None  # children's output (None: inherit ours)


@dataclass
class RunningStack:
    redis_url: str
    embedded: RedisServer | None
    children: dict[str, Process]


@asynccontextmanager
async def local_stack(settings: Settings, plan: StackPlan) -> AsyncIterator[RunningStack]:
    """Start everything, yield, then stop it all in order, whatever happened inside."""
    embedded: RedisServer | None = None
    if "redis_url" in settings.model_fields_set:
        url = settings.redis_url
    else:
        embedded = RedisServer(
            plan.data_dir / "redis",
            port=plan.redis_port,
            appendonly=True,
            executable=embedded_redis_server(),
        )
        try:
            await anyio.to_thread.run_sync(embedded.start)
        except RuntimeError as exc:
            raise ServiceUnavailable(
                f"the embedded Redis could not start on port {plan.redis_port} "
                f"(data in {plan.data_dir / 'redis'}): {exc}; is another `up` running? "
                "Pass --redis-port, or set REDIS_URL to use a Redis of yours"
            ) from None
        url = embedded.url
        log.info("redis_started", url=url, data=str(plan.data_dir / "redis"), embedded=True)
    env = {**os.environ, **plan.env, "REDIS_URL": url}
    children: dict[str, Process] = {}
    try:
        children["conductor"] = await _spawn(["conductor"], env, plan.output)
        for pool in settings.ordered_pools:
            if (slots := plan.concurrency.get(pool.name, 0)) > 0:
                args = ["worker", "--pool", pool.name, "--concurrency", str(slots)]
                children[f"worker-{pool.name}"] = await _spawn(args, env, plan.output)
        log.info("stack_started", redis=redact_url(url), processes=sorted(children))
        yield RunningStack(url, embedded, children)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop_children(children, settings.grace_period + 10)
            if embedded is not None:
                await anyio.to_thread.run_sync(embedded.stop)
            log.info("stack_stopped")


async def wait_for_exit(stack: RunningStack) -> str:
    """Block until any child exits; return its name (the caller decides what follows)."""
    done = anyio.Event()
    first: list[str] = []

    async def watch(name: str, process: Process) -> None:
        await process.wait()
        first.append(name)
        done.set()

    async with anyio.create_task_group() as tasks:
        for name, process in stack.children.items():
            tasks.start_soon(watch, name, process)
        await done.wait()
        tasks.cancel_scope.cancel()
    return first[0]


async def _spawn(args: list[str], env: Mapping[str, str], output: IO[bytes] | None) -> Process:
    return await anyio.open_process(
        [sys.executable, "-m", "orchestrator", *args],
        env=dict(env),
        stdin=None,
        stdout=output,
        stderr=output,
    )


async def _stop_children(children: Mapping[str, Process], grace: float) -> None:
    """SIGTERM all (workers drain, the conductor hands back), SIGKILL what outlives grace."""
    import signal

    for process in children.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)

    async def reap(name: str, process: Process) -> None:
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            log.warning("child_killed", process=name, after=grace)
            process.kill()
            await process.wait()

    async with anyio.create_task_group() as tasks:
        for name, process in children.items():
            tasks.start_soon(reap, name, process)


def child_exit_codes(stack: RunningStack) -> dict[str, Any]:
    return {name: process.returncode for name, process in stack.children.items()}
