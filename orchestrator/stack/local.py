"""The whole stack on one machine: Redis (embedded unless one is given), a conductor, and
one worker process per pool, supervised as child processes.

`orchestrator up` runs it until Ctrl-C / SIGTERM; `orchestrator demo` runs a batch
through it. Every child runs in its own session, so a terminal's Ctrl-C (sent to the
whole foreground process group) reaches only the supervisor, which stops the stack in
order: the conductor first (it stops taking work and hands back what it holds), then
the workers (running jobs finish within `grace_period`, receipts written), then the
embedded Redis, which syncs its append-only file as it exits. A second request makes
the workers stop at once, their running jobs going back in line; Redis is still last.
The stack is recorded in its data directory (see `record`) for the other commands.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import structlog
from anyio.abc import Process

from orchestrator.connection import connect
from orchestrator.errors import ServiceUnavailable, UserError
from orchestrator.eviction import check_eviction
from orchestrator.pools import ScalerSettings
from orchestrator.settings import Settings, redact_url
from orchestrator.stack.record import StackLock, StackRecord, origin_given
from orchestrator.stack.redis_server import (
    RedisServer,
    embedded_redis_server,
    port_is_free,
)
from orchestrator.web.access import DEFAULT_PORT as DEFAULT_WEB_PORT
from orchestrator.web.server import listen

log = structlog.get_logger("orchestrator.up")
DEFAULT_REDIS_PORT = 6399
CONDUCTOR_STOP = 15.0  # seconds for a conductor to hand back what it holds
FAST_STOP = 10.0  # seconds for a worker told to hurry to put its jobs back in line


@dataclass
class StackPlan:
    """What to start: worker concurrency per pool, and where the embedded Redis lives."""

    concurrency: Mapping[str, int]
    data_dir: Path = Path("data")
    redis_port: int | None = None  # None: DEFAULT_REDIS_PORT when free, else any free port
    env: dict[str, str] = field(default_factory=dict)  # extra environment for children
    output: IO[bytes] | None = None  # children's output (None: inherit ours)
    web: WebPlan | None = None  # the dashboard, as a child like the others (None: none)
    started_by: str = "orchestrator up"  # what children say started their Redis


@dataclass(frozen=True)
class WebPlan:
    """The dashboard `up` starts: where, and the token its actions need."""

    token: str
    host: str = "127.0.0.1"
    port: int | None = None  # None: DEFAULT_WEB_PORT when free, else any free port
    shown: bool = False  # the token is the stack's own (not the user's): in the URL printed


# The scaler `up --elastic` and `demo` give a pool that has none: cloud workers of this
# host, launched when metal is full and released two seconds after their last job.
LOCAL_SCALER: dict[str, Any] = {
    "provider": "local", "scale_up_after": 1.0, "idle_release_after": 2.0,
    "boot_timeout": 30.0, "launch_rate": 60.0, "price_per_worker_hour": 0.80,
}  # fmt: skip
SLOTS_PER_LOCAL_WORKER = 4


def with_local_scaler(settings: Settings, pool: str, slots: int) -> tuple[Settings, dict[str, str]]:
    """`settings` with a local scaler for `pool` (up to `slots` slots) unless it has a
    scaler already, and the environment that gives the children the same pools."""
    pools = []
    for configured in settings.pools:
        if configured.name == pool and configured.scaler is None:
            per = min(SLOTS_PER_LOCAL_WORKER, slots)
            scaler = ScalerSettings(
                **LOCAL_SCALER, slots_per_worker=per, max_workers=math.ceil(slots / per)
            )
            configured = configured.model_copy(update={"scaler": scaler})
        pools.append(configured)
    env = {"ORCHESTRATOR_POOLS": json.dumps([p.model_dump(mode="json") for p in pools])}
    return settings.model_copy(update={"pools": pools}), env


@dataclass
class RunningStack:
    redis_url: str
    embedded: RedisServer | None
    children: dict[str, Process]
    web_url: str | None = None  # the dashboard's address (without its token)


@dataclass
class Shutdown:
    """How the supervisor is asked to stop: `requested` drains, `hurry` stops at once."""

    requested: anyio.Event = field(default_factory=anyio.Event)
    hurry: anyio.Event = field(default_factory=anyio.Event)

    def request(self) -> None:
        """First call drains, the next one hurries (a second Ctrl-C)."""
        if self.requested.is_set():
            self.hurry.set()
        self.requested.set()


@asynccontextmanager
async def local_stack(
    settings: Settings, plan: StackPlan, shutdown: Shutdown | None = None
) -> AsyncIterator[RunningStack]:
    """Start everything, yield, then stop it all in order, whatever happened inside."""
    shutdown = shutdown or Shutdown()
    lock = StackLock(plan.data_dir)
    await anyio.to_thread.run_sync(lock.acquire)
    embedded: RedisServer | None = None
    children: dict[str, Process] = {}
    try:
        if "redis_url" in settings.model_fields_set:
            url = settings.redis_url
            # The user's Redis, checked before anything starts (one line, exit 69): not
            # children that each fail to reach it after the stack said it was ready.
            # It starts a conductor, which refuses an evicting Redis: so does `up`, first.
            async with connect(url, namespace=settings.namespace, name="orchestrator-up") as redis:
                await check_eviction(
                    redis, url, refuse=True, allowed=settings.allow_evicting_redis,
                    warn=lambda line: log.warning("redis_may_evict", problem=line),
                )  # fmt: skip
        else:
            embedded = await _start_redis(plan)
            url = embedded.url
        env = {**os.environ, **plan.env, "REDIS_URL": url}
        if embedded is not None:  # else the URL is the user's, from where they set it
            env |= origin_given(url, f"{plan.started_by}, its embedded Redis")
        _say_how_pools_are_served(settings, plan)
        children["conductor"] = await _spawn(["conductor"], env, plan.output)
        for pool in settings.ordered_pools:
            # A pool with a scaler gets its workers from it (the conductor's), not here.
            if pool.scaler is None and (slots := plan.concurrency.get(pool.name, 0)) > 0:
                args = ["worker", "--pool", pool.name, "--concurrency", str(slots)]
                children[f"worker-{pool.name}"] = await _spawn(args, env, plan.output)
        web_url = None
        if plan.web is not None:
            web_url, children["web"] = await _start_web(plan.web, env, plan.output)
        record = StackRecord(
            redis_url=url,
            up_pid=os.getpid(),
            started_at=time.time(),
            data_dir=str(plan.data_dir.resolve()),
            redis_pid=embedded.pid if embedded else None,
            pids={name: process.pid for name, process in children.items()},
        )
        await anyio.to_thread.run_sync(lock.write, record)
        log.info("stack_started", redis=redact_url(url), processes=sorted(children))
        yield RunningStack(url, embedded, children, web_url)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop_in_order(children, settings.grace_period, shutdown)
            if embedded is not None:
                await anyio.to_thread.run_sync(embedded.stop)
            await anyio.to_thread.run_sync(lock.release)
            log.info("stack_stopped")


def _say_how_pools_are_served(settings: Settings, plan: StackPlan) -> None:
    """One line: each pool and what serves it here (workers `up` starts, its scaler, or
    nothing); a warning for a pool nothing serves (most often a `[[pools]]` list in
    orchestrator.toml that left a default pool out, or `--metal`/`--cloud` unset)."""
    served: dict[str, str] = {}
    for pool in settings.ordered_pools:
        slots = plan.concurrency.get(pool.name, 0)
        if pool.scaler is not None:
            scaler = pool.scaler
            served[pool.name] = (
                f"scaler, up to {scaler.max_workers} x {scaler.slots_per_worker} slots"
            )
        elif slots > 0:
            served[pool.name] = f"a worker of {slots} slot{'s' if slots != 1 else ''}"
        else:
            served[pool.name] = "nothing"
    log.info("pools", **served)
    for name, how in served.items():
        if how == "nothing":
            log.warning(
                "pool_unserved", pool=name,
                hint="no worker serves it here, so its jobs wait: give it a [pools.scaler], "
                f"or start one (orchestrator worker --pool {name})",
            )  # fmt: skip


async def _start_redis(plan: StackPlan) -> RedisServer:
    """On --redis-port; else on DEFAULT_REDIS_PORT when it looks free, and on any free
    port when it is not, or when another `up` starting at the same moment took it."""
    tries: list[int | None] = [plan.redis_port]
    if plan.redis_port is None and port_is_free(DEFAULT_REDIS_PORT):
        tries.insert(0, DEFAULT_REDIS_PORT)
    data = plan.data_dir / "redis"
    for port in tries:
        embedded = RedisServer(data, port=port, appendonly=True, executable=embedded_redis_server())
        try:
            await anyio.to_thread.run_sync(embedded.start)
        except RuntimeError as exc:
            if port != tries[-1]:
                continue
            where = f"port {port}" if port is not None else "a free port"
            raise ServiceUnavailable(
                f"the embedded Redis could not start on {where} (data in {data}): "
                f"{str(exc).splitlines()[-1] if str(exc) else exc}; "
                "pass --redis-port, or set REDIS_URL to use a Redis of yours"
            ) from None
        log.info("redis_started", url=embedded.url, data=str(data), embedded=True)
        return embedded
    raise AssertionError("unreachable: the last try returns or raises")


async def _start_web(
    web: WebPlan, env: Mapping[str, str], output: IO[bytes] | None
) -> tuple[str, Process]:
    """The dashboard on a socket bound here and inherited by the child: the port is
    ours before the child starts, so two `up`s starting at once never race for it, and
    one the user asked for that is taken fails `up` in one line before anything runs."""
    if web.port is not None:
        sock = listen(web.host, web.port)
    else:
        try:
            sock = listen(web.host, DEFAULT_WEB_PORT)
        except UserError:
            sock = listen(web.host, 0)
    with sock:
        port = sock.getsockname()[1]
        args = ["web", "--host", web.host, "--port", str(port), "--fd", str(sock.fileno())]
        if web.shown:
            args.append("--show-token")
        env = {**env, "ORCHESTRATOR_WEB_TOKEN": web.token}
        process = await _spawn(args, env, output, pass_fds=(sock.fileno(),))
    host = f"[{web.host}]" if ":" in web.host else web.host
    return f"http://{host}:{port}/", process


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


async def _spawn(
    args: list[str],
    env: Mapping[str, str],
    output: IO[bytes] | None,
    pass_fds: tuple[int, ...] = (),
) -> Process:
    # Redis answered `up` a moment ago: a child that meets it frozen or restarting as it
    # starts waits for it (`redis_unavailable` once), not exits after `ready` was said.
    return await anyio.open_process(
        [sys.executable, "-m", "orchestrator", *args, "--wait-for-redis"],
        env=dict(env),
        stdin=None,
        stdout=output,
        stderr=output,
        start_new_session=True,  # the terminal's Ctrl-C is for the supervisor alone
        pass_fds=pass_fds,
    )


async def _stop_in_order(children: Mapping[str, Process], grace: float, shutdown: Shutdown) -> None:
    """The conductor first (no new work is forwarded; the workers its scaler launched
    drain with it), then every other worker at once. A hurry reaches both: the
    conductor passes its second SIGTERM on to the workers it launched."""
    conductors = {n: p for n, p in children.items() if n == "conductor"}
    workers = {n: p for n, p in children.items() if n != "conductor"}
    await _stop(conductors, CONDUCTOR_STOP + grace + FAST_STOP, shutdown)
    await _stop(workers, grace + FAST_STOP, shutdown)


async def _stop(
    children: Mapping[str, Process], patience: float, shutdown: Shutdown | None
) -> None:
    """SIGTERM (drain), again when asked to hurry (stop at once), SIGKILL after `patience`."""
    for process in children.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)

    async def hurry() -> None:
        if shutdown is None:
            return
        await shutdown.hurry.wait()
        await anyio.sleep(0.2)  # a second SIGTERM right after the first can arrive as one
        for process in children.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def reap(name: str, process: Process) -> None:
        with anyio.move_on_after(patience):
            await process.wait()
        if process.returncode is None:
            log.warning("child_killed", process=name, after=patience)
            process.kill()
            await process.wait()

    async with anyio.create_task_group() as reaping:
        reaping.start_soon(hurry)
        async with anyio.create_task_group() as tasks:
            for name, process in children.items():
                tasks.start_soon(reap, name, process)
        reaping.cancel_scope.cancel()


def child_exit_codes(stack: RunningStack) -> dict[str, Any]:
    return {name: process.returncode for name, process in stack.children.items()}
