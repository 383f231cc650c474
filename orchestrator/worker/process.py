"""A pool's worker process: an arq worker on the pool's queue, running registry tasks.

arq does the queue mechanics (claiming, in-progress keys, retries by `Retry`, drain on
SIGTERM); this module runs one worker process around it: JSON instead of pickle, its
heartbeat (`heartbeat`), its wake-ups on a forward and its claims recorded
(`arq_hooks`), the registry's tasks behind receipts (`runner`), a drain on
SIGTERM and a hurry on a second one, and claims dropped after Redis came back.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
import orjson
import structlog
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import arq_jobs
from orchestrator.connection import connect, on_messages, open_arq
from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.pools import Executor
from orchestrator.registry import task_registry
from orchestrator.scripts import script
from orchestrator.settings import Settings
from orchestrator.telemetry import serve_telemetry
from orchestrator.worker.arq_hooks import ARQ_POLL_DELAY, PoolWake, WakeableWorker
from orchestrator.worker.executors import executor
from orchestrator.worker.heartbeat import announce, beat, heartbeat
from orchestrator.worker.runner import runner
from orchestrator.worker.state import WorkerState, heartbeat_ttl
from orchestrator.worker.stops import watch_for_stops

log = structlog.get_logger("orchestrator.worker")
# arq's own ceiling on a job's runs; ours (`max_tries`) is enforced by `runner`,
# which must get to see a job that ran out of tries so that it can dead-letter it.
ARQ_MAX_TRIES = 1_000_000
_PENDING: set[asyncio.Task[None]] = set()  # fire-and-forget tasks, kept from the GC


async def run_worker(
    settings: Settings,
    pool: str,
    concurrency: int,
    *,
    burst: bool = False,
    idle_exit: float | None = None,
    launch_id: str | None = None,
    executor_kind: Executor | None = None,
) -> WorkerState:
    """Run until SIGTERM/SIGINT (draining for `grace_period`), until the pool's scaler
    releases it or it was idle `idle_exit` seconds (the same drain), or until the queue
    is empty when `burst`. Sync tasks run in `executor_kind` (default: the pool's)."""
    if pool not in {p.name for p in settings.pools}:
        known = ", ".join(p.name for p in settings.ordered_pools)
        raise UserError(f"unknown pool {pool!r} (configured pools: {known})")
    keys = Keys(settings.namespace)
    registry = task_registry(tuple(settings.task_packages))
    state = WorkerState(
        pool,
        f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        concurrency,
        tasks=tuple(sorted(registry)),
        ttl=heartbeat_ttl(settings.heartbeat_interval),
        prefetch=settings.prefetch_seconds,
        launch_id=launch_id or "",
        idle_exit=idle_exit,
    )
    kind = executor_kind or settings.executor_of(pool)
    packages = tuple(settings.task_packages)
    async with (
        executor(kind, concurrency, registry, packages, settings.max_jobs_per_child) as runs,
        connect(settings.redis_url, namespace=settings.namespace, name=f"worker-{pool}") as redis,
    ):
        functions = [
            func(runner(definition, settings, keys, state, runs), name=name)  # type: ignore[arg-type]
            for name, definition in registry.items()
        ]
        arq_redis = open_arq(settings.redis_url, namespace=settings.namespace, name=f"arq-{pool}")

        def make_worker() -> Worker:
            return WakeableWorker(
                wake,
                pool,
                functions,
                keys=keys,
                worker_id=state.worker_id,
                outcomes=state.outcomes,
                begun=state.begun,
                queue_name=keys.pool_queue(pool),
                redis_pool=arq_redis,
                burst=burst,
                max_jobs=concurrency,
                # arq's own timeout must never beat ours: when it fires, arq fails the
                # job without our receipt, retry or dead letter.
                job_timeout=arq_jobs.arq_job_timeout(settings.job_timeout),
                max_tries=ARQ_MAX_TRIES,
                poll_delay=ARQ_POLL_DELAY,  # the real pause is WakeableWorker's wait
                job_completion_wait=math.ceil(settings.grace_period),
                job_serializer=orjson.dumps,
                job_deserializer=orjson.loads,
                ctx={"worker_state": state},
            )

        wake = PoolWake()
        log.info(
            "worker_started",
            pool=pool,
            worker=state.worker_id,
            slots=concurrency,
            tasks=list(state.tasks),
        )
        async with (
            heartbeat(redis, keys, settings.heartbeat_interval, state),
            _wake_on_forward(redis, keys.pool_wake(pool), wake),
            watch_for_stops(redis, keys, state.jobs, settings.heartbeat_interval),
            serve_telemetry(
                settings.metrics_port, redis, state.metrics, settings.heartbeat_interval
            ),
        ):
            backoff = 0.5
            owe_release = False
            while True:
                if owe_release:
                    owe_release = not await _release_held(redis, keys, state)
                worker = make_worker()
                _drain_on_signal(worker, redis, keys, state)
                try:
                    await worker.async_run()
                except asyncio.CancelledError:
                    pass  # SIGTERM/SIGINT, after the drain
                except (RedisError, OSError) as exc:
                    # Redis went away (or answered LOADING, READONLY… while coming back):
                    # the running jobs are given up, and once Redis is
                    # back their in-progress claims are dropped so that they run again
                    # at once (here or elsewhere) rather than after arq's job timeout.
                    log.warning("redis_unavailable", error=str(exc), retry_in=backoff)
                    for running in worker.tasks.values():
                        running.cancel()
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    owe_release = True
                    continue
                with suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    await worker.close()
                break
        await arq_redis.aclose()
    log.info("worker_stopped", pool=pool, worker=state.worker_id, jobs=state.done)
    return state


async def _release_held(redis: Redis, keys: Keys, state: WorkerState) -> bool:
    """Give up the jobs this worker held when Redis went away (`lua/release_held.lua`),
    then renew the heartbeat before anything is claimed again; False while Redis is
    still away (the caller tries again before its next start).

    The heartbeat most likely lapsed during the outage (Redis keeps expiry times across
    a restart): a worker that claimed before its next beat would look dead to the
    conductors, which would free its new claims for another worker to run beside it."""
    try:
        given_up = await script(redis, "release_held")(
            keys=[keys.holding(state.worker_id)],
            args=[arq_jobs.IN_PROGRESS_KEY_PREFIX, arq_jobs.RETRY_KEY_PREFIX],
        )
        await beat(redis, keys, state)
    except (RedisError, OSError):
        return False
    if given_up:
        log.warning("jobs_released", jobs=int(given_up), reason="redis connection lost")
    return True


def _drain_on_signal(worker: Worker, redis: Redis, keys: Keys, state: WorkerState) -> None:
    """First SIGTERM/SIGINT: stop advertising slots, then let arq drain (running jobs get
    `grace_period`). A second one: stop now, running jobs going back in line.

    Without the first step the conductor keeps forwarding to a worker that has stopped
    taking jobs, and those jobs wait in the pool's queue for a worker that may never come
    back. A job cancelled by the second is not a failure: arq leaves it in the pool's
    queue and the run it did not finish is not counted against its `max_tries`.
    """
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        state.stopping += 1
        if state.stopping > 1:
            log.info("worker_hurrying", pool=state.pool, requeued=state.running)
            worker.handle_sig(signum)
            return
        state.slots = 0
        announcing = loop.create_task(announce(redis, keys, state))
        _PENDING.add(announcing)
        announcing.add_done_callback(_PENDING.discard)
        worker.handle_sig_wait_for_completion(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


@asynccontextmanager
async def _wake_on_forward(redis: Redis, channel: str, wake: PoolWake) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(on_messages, redis, channel, wake, wake.hear)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
