"""A pool's worker process: an arq worker on the pool's queue, running registry tasks.

arq does the queue mechanics (claiming, in-progress keys, retries by `Retry`, drain on
SIGTERM); this module runs one worker process around it: JSON instead of pickle, its
heartbeat (`heartbeat`), its wake-ups on a forward and its claims recorded
(`arq_hooks`), the registry's tasks behind receipts (`runner`), a drain on
SIGTERM and a hurry on a second one, and claims dropped after Redis came back. A stop
ends within `grace_period` and `state.WIND_DOWN` seconds even when Redis does not
answer: what could not be written by then is left to recovery.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import orjson
import structlog
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator import arq_jobs
from orchestrator.connection import RETRY_AT_MOST, RETRY_FIRST, connect, on_messages, open_arq
from orchestrator.errors import UserError
from orchestrator.eviction import check_eviction
from orchestrator.keys import Keys
from orchestrator.pools import Executor
from orchestrator.registry import task_registry
from orchestrator.scripts import script
from orchestrator.settings import Settings
from orchestrator.telemetry import serve_telemetry
from orchestrator.worker.arq_hooks import ARQ_POLL_DELAY, WakeableWorker
from orchestrator.worker.claimed_reads import ClaimedReads
from orchestrator.worker.executors import executor
from orchestrator.worker.heartbeat import announce, beat, heartbeat
from orchestrator.worker.pool_wake import PoolWake
from orchestrator.worker.runner import runner
from orchestrator.worker.state import LAST_TRY, WorkerState, heartbeat_ttl, on_the_way_out
from orchestrator.worker.stops import watch_for_stops

log = structlog.get_logger("orchestrator.worker")
# arq's own ceiling on a job's runs; ours (`max_tries`) is enforced by `runner`,
# which must get to see a job that ran out of tries so that it can dead-letter it.
ARQ_MAX_TRIES = 1_000_000
_PENDING: set[asyncio.Task[bool]] = set()  # fire-and-forget tasks, kept from the GC


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
        await check_eviction(
            redis, settings.redis_url, refuse=False, allowed=True,
            warn=lambda line: log.warning("redis_may_evict", problem=line),
        )  # fmt: skip
        functions = [
            func(runner(definition, settings, keys, state, runs), name=name)  # type: ignore[arg-type]
            for name, definition in registry.items()
        ]
        arq_redis = open_arq(
            settings.redis_url, namespace=settings.namespace, name=f"arq-{pool}", kind=ClaimedReads
        )

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
                handle_signals=False,  # the process's handler (`_Stop`) drives them
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
        stop = _Stop(redis, keys, state, settings.grace_period)
        stop.install()
        async with (
            heartbeat(redis, keys, settings.heartbeat_interval, state),
            _wake_on_forward(redis, keys.pool_wake(pool), wake),
            watch_for_stops(redis, keys, state.jobs, settings.heartbeat_interval, state.outage),
            serve_telemetry(
                settings.metrics_port, redis, state.metrics, settings.heartbeat_interval
            ),
        ):
            last = await _work(make_worker, redis, keys, state, stop)
            abandoned = await _wind_down(last, state)
        with anyio.move_on_after(LAST_TRY, shield=True):
            await arq_redis.aclose()
    done = {"pool": pool, "worker": state.worker_id, "jobs": state.done}
    if abandoned:  # their ends were not written: a conductor puts them back in line
        log.warning("worker_stopped", **done, abandoned=abandoned, error=_why(state))
    else:
        log.info("worker_stopped", **done)
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
    except (RedisError, OSError) as exc:
        state.outage.failed(exc, during="release")
        return False
    state.outage.answered()
    if given_up:
        log.warning("jobs_released", jobs=int(given_up), reason="redis connection lost")
    return True


async def _work(
    make_worker: Callable[[], Worker], redis: Redis, keys: Keys, state: WorkerState, stop: _Stop
) -> Worker | None:
    """arq workers one after another until a stop (or a burst's end): a new one each
    time Redis came back; the last one, whose jobs may still be ending.

    When Redis goes away (or answers LOADING, READONLY… while coming back) the running
    jobs are given up, and once it is back their in-progress claims are dropped so that
    they run again at once (here or elsewhere) rather than after arq's job timeout. A
    stopping worker goes on draining instead (`_wind_down`): its jobs may still finish."""
    backoff, owe_release, worker = RETRY_FIRST, False, None
    while not state.stopping:
        if owe_release:
            with stop.between_runs():
                owe_release = not await _release_held(redis, keys, state)
                if owe_release:
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_AT_MOST)
            if owe_release:
                continue
            backoff = RETRY_FIRST
        worker = stop.worker = make_worker()
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            break  # SIGTERM/SIGINT, after the drain
        except (RedisError, OSError) as exc:
            state.outage.failed(exc, retry_in=backoff)
        else:
            break  # a burst's end
        if state.stopping:
            break  # the drain goes on without arq's loop, in `_wind_down`
        stop.worker = None
        if isinstance(worker, WakeableWorker):
            worker.abandon()  # a job's end must not start another on this worker
        for running in worker.tasks.values():
            running.cancel()
            running.add_done_callback(_seen)  # their ends fail too; nobody reaps them
        owe_release = True
        with stop.between_runs():
            await anyio.sleep(backoff)
    return worker


async def _wind_down(worker: Worker | None, state: WorkerState) -> int:
    """The last arq worker's jobs end (the drain's), within the stop's deadline; arq's
    own end, without its `close()`, which waits for them without a bound and raises the
    cancellation of a job cut short while its end was being written. How many jobs
    ended without their end written: left to recovery."""
    if worker is None:
        return 0
    runs = list(worker.tasks.values())
    if ending := [run for run in runs if not run.done()]:
        await asyncio.wait(ending, timeout=max(state.stop_left(), 0.0))
    abandoned = 0
    for run in runs:
        run.add_done_callback(_seen)
        if not run.done() or run.cancelled():
            abandoned += 1
        elif (error := run.exception()) is not None:
            abandoned += 1
            if not isinstance(error, RedisError | OSError):
                log.error("job_end_failed", error=f"{type(error).__name__}: {error}")
    if worker.pool is not None:
        pool = worker.pool
        await on_the_way_out(state, "health_key", lambda: pool.delete(worker.health_check_key))
    return abandoned


def _why(state: WorkerState) -> str:
    return "redis unavailable" if state.outage.down else "the stop's deadline passed"


def _seen(task: asyncio.Task[None]) -> None:
    """An ended run's error, taken: asyncio would print it as a traceback at exit."""
    if not task.cancelled():
        task.exception()


class _Stop:
    """The worker's SIGTERM/SIGINT, installed once for whichever arq worker runs when
    one comes — or none, between two after Redis went away.

    First signal: stop advertising slots, then let the running arq worker drain (running
    jobs get `grace_period`; `WorkerState.stop_by` bounds what follows); between two
    workers the loop just ends. A second one: stop now, running jobs going back in line.

    Without the first step the conductor keeps forwarding to a worker that has stopped
    taking jobs, and those jobs wait in the pool's queue for a worker that may never come
    back. A job cancelled by the second is not a failure: arq leaves it in the pool's
    queue and the run it did not finish is not counted against its `max_tries`. The
    handler is the process's, not an arq worker's: a stop that came while Redis was away
    reached the worker that had just failed, and the next one ran on."""

    def __init__(self, redis: Redis, keys: Keys, state: WorkerState, grace: float) -> None:
        self.redis, self.keys, self.state, self.grace = redis, keys, state, grace
        self.worker: Worker | None = None  # the arq worker whose jobs run now
        self._between: anyio.CancelScope | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    @contextmanager
    def between_runs(self) -> Iterator[None]:
        """Around what the loop does between two arq workers: a stop ends it."""
        try:
            with anyio.CancelScope() as self._between:
                if self.state.stopping:
                    self._between.cancel()
                yield
        finally:
            self._between = None

    def _on_signal(self, signum: signal.Signals) -> None:
        state = self.state
        state.stopping += 1
        state.stop_asked(self.grace)
        if self._between is not None:
            self._between.cancel()
        if state.stopping > 1:
            log.info("worker_hurrying", pool=state.pool, requeued=state.running)
            if self.worker is not None:
                self.worker.handle_sig(signum)
            return
        state.slots = 0
        announcing = asyncio.get_running_loop().create_task(
            on_the_way_out(state, "announce", lambda: announce(self.redis, self.keys, state))
        )
        _PENDING.add(announcing)
        announcing.add_done_callback(_PENDING.discard)
        if self.worker is not None:
            self.worker.handle_sig_wait_for_completion(signum)


@asynccontextmanager
async def _wake_on_forward(redis: Redis, channel: str, wake: PoolWake) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(on_messages, redis, channel, wake, wake.hear)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
