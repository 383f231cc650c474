"""A pool's worker process: an arq worker on the pool's queue, running registry tasks.

arq does the queue mechanics (claiming, in-progress keys, retries by `Retry`, drain on
SIGTERM); this module adds what the conductor and `verify` rely on: JSON instead of
pickle, a heartbeat announcing the worker's slots and the tasks it runs (the conductor
routes by them), arguments checked against the task before a run, a receipt per job
(with the heartbeat's `running` count in the same step), attempts counted against
`max_tries`, a dead letter for jobs that failed for good, and on a stop that cuts a
job short, the job put back in line without counting the cut run.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import structlog
from arq.connections import ArqRedis
from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import __version__, arq_jobs
from orchestrator.connection import connect, on_messages, open_pool
from orchestrator.errors import UserError
from orchestrator.job import Job
from orchestrator.job_stops import RunningJob, begin, watch_for_stops
from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.receipts import DeadLetter, Receipt, RunningCount, record, result_summary
from orchestrator.registry import TaskDef, task_registry
from orchestrator.settings import Settings
from orchestrator.telemetry import serve_telemetry

log = structlog.get_logger("orchestrator.worker")
# arq's own ceiling on a job's runs; ours (`max_tries`) is enforced in `_runner`, which
# must get to see a job that ran out of tries so that it can dead-letter it.
ARQ_MAX_TRIES = 1_000_000
# Longest pause between two polls of the pool's queue when no wake-up comes (arq's
# default period is 0.5 s); a forward wakes the worker at once.
POLL_DELAY = 0.5
_PENDING: set[asyncio.Task[None]] = set()  # fire-and-forget tasks, kept from the GC


@dataclass
class WorkerState:
    pool: str
    worker_id: str
    slots: int
    tasks: tuple[str, ...] = ()  # what this worker runs, announced with its heartbeat
    running: int = 0
    done: int = 0
    stopping: int = 0  # signals received: 1 drains, 2 puts running jobs back in line
    metrics: Metrics = field(default_factory=Metrics)
    ttl: int = 15  # seconds a heartbeat outlives its last beat
    jobs: dict[str, RunningJob] = field(default_factory=dict)  # arq id → job it runs
    launch_id: str = ""  # the scaler launch it answers, "" when started otherwise
    idle_since: float | None = field(default_factory=time.time)  # None while running jobs
    idle_exit: float | None = None  # seconds idle before it leaves by itself

    def ran(self, delta: int) -> None:
        """`running` changes by `delta`; idleness is timed from the moment it hits 0."""
        self.running += delta
        self.idle_since = time.time() if self.running == 0 else None


async def run_worker(
    settings: Settings,
    pool: str,
    concurrency: int,
    *,
    burst: bool = False,
    idle_exit: float | None = None,
    launch_id: str | None = None,
) -> WorkerState:
    """Run until SIGTERM/SIGINT (draining for `grace_period`), until the pool's scaler
    releases it or it was idle `idle_exit` seconds (the same drain), or until the queue
    is empty when `burst`."""
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
        ttl=_ttl(settings.heartbeat_interval),
        launch_id=launch_id or "",
        idle_exit=idle_exit,
    )
    functions = [
        func(_runner(definition, settings, keys, state), name=name)  # type: ignore[arg-type]
        for name, definition in registry.items()
    ]
    async with connect(settings.redis_url, name=f"worker-{pool}") as redis:
        arq_redis = ArqRedis(
            open_pool(settings.redis_url, name=f"arq-{pool}"),
            job_serializer=orjson.dumps,
            job_deserializer=orjson.loads,
        )

        def make_worker() -> Worker:
            return _WakeableWorker(
                wake,
                keys.holding(state.worker_id),
                pool,
                functions,
                queue_name=keys.pool_queue(pool),
                redis_pool=arq_redis,
                burst=burst,
                max_jobs=concurrency,
                # arq's own timeout must never beat ours: when it fires, arq fails the
                # job without our receipt, retry or dead letter.
                job_timeout=arq_jobs.arq_job_timeout(settings.job_timeout),
                max_tries=ARQ_MAX_TRIES,
                poll_delay=0.001,  # the real pause is _WakeableWorker's wait
                job_completion_wait=math.ceil(settings.grace_period),
                job_serializer=orjson.dumps,
                job_deserializer=orjson.loads,
                ctx={"worker_state": state},
            )

        wake = asyncio.Event()
        log.info(
            "worker_started",
            pool=pool,
            worker=state.worker_id,
            slots=concurrency,
            tasks=list(state.tasks),
        )
        async with (
            _heartbeat(redis, keys, settings.heartbeat_interval, state),
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
    """Drop the in-progress claims of the jobs this worker gave up; False while Redis is
    still away (the caller tries again before its next start)."""
    try:
        held = await redis.hkeys(keys.holding(state.worker_id))  # type: ignore[misc]
        if held:
            claims = [arq_jobs.IN_PROGRESS_KEY_PREFIX + job.decode() for job in held]
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(*claims)
                pipe.delete(keys.holding(state.worker_id))
                await pipe.execute()
            log.warning("jobs_released", jobs=len(held), reason="redis connection lost")
    except (RedisError, OSError):
        return False
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
        announcing = loop.create_task(_announce(redis, keys, state))
        _PENDING.add(announcing)
        announcing.add_done_callback(_PENDING.discard)
        worker.handle_sig_wait_for_completion(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def _announce(redis: Redis, keys: Keys, state: WorkerState) -> None:
    """Tell the conductors at once what changed (slots, running), between beats."""
    key = keys.worker(state.pool, state.worker_id)
    with suppress(RedisConnectionError, RedisTimeoutError, OSError):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={
                "slots": str(state.slots), "running": str(state.running),
                "draining": "1" if state.stopping else "",
            })  # fmt: skip
            pipe.expire(key, state.ttl)  # never leave a heartbeat without its TTL
            await pipe.execute()


class _WakeableWorker(Worker):
    """An arq worker that polls its queue as soon as the conductor forwards a job, and
    says which jobs it holds as soon as it has claimed them.

    arq polls a queue on a fixed period; the conductor only forwards as many jobs as a
    pool has free slots, so a worker would sit idle for up to a period after every
    job. Here the pause after each poll ends early on the pool's wake channel. And a
    job claimed by a process that then dies stays claimed for arq's job timeout unless
    someone knows who held it: `run_job` records that first thing, before arq's own
    reads. It hooks `_poll_iteration` and `run_job`, arq internals: arq is pinned below
    0.29 for this reason.
    """

    def __init__(
        self, wake: asyncio.Event, holding: str, pool: str, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._wake = wake
        self._holding = holding
        self._pool_name = pool
        self._read = 0

    async def run_job(self, job_id: str, score: int) -> None:
        with suppress(RedisError, OSError):  # Redis away: arq's own read fails next
            await self.pool.hset(self._holding, job_id, self._pool_name)  # type: ignore[misc]
        await super().run_job(job_id, score)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        self._read = len(job_ids)
        await super().start_jobs(job_ids)

    async def _poll_iteration(self) -> None:
        self._wake.clear()
        self._read = 0
        await super()._poll_iteration()
        if self._read < self.queue_read_limit:  # the queue is drained: pause until woken
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_DELAY)


@asynccontextmanager
async def _wake_on_forward(redis: Redis, channel: str, wake: asyncio.Event) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(on_messages, redis, channel, wake)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


def _runner(
    definition: TaskDef, settings: Settings, keys: Keys, state: WorkerState
) -> Callable[[dict[str, Any], Job], Awaitable[dict[str, Any]]]:
    """The arq function for one task: the envelope in, a receipt out, whatever happens."""

    async def run(ctx: dict[str, Any], envelope: Job) -> dict[str, Any]:
        running = RunningJob(envelope["batch"], envelope["id"])
        state.jobs[ctx["job_id"]] = running  # so that `cancel --running` can stop it
        try:
            return await run_tracked(ctx, envelope, running)
        finally:
            state.jobs.pop(ctx["job_id"], None)

    async def run_tracked(
        ctx: dict[str, Any], envelope: Job, running: RunningJob
    ) -> dict[str, Any]:
        redis: Redis = ctx["redis"]
        meta = envelope.get("meta", {})
        attempt: int = ctx["job_try"]
        arq_id: str = ctx["job_id"]
        max_tries = meta.get("max_tries") or settings.max_tries
        bound = log.bind(
            job_id=envelope["id"], task=envelope["task"], pool=state.pool, attempt=attempt
        )
        started = time.time()

        def receipt(status: Any, error: str | None, result: Any = None) -> Receipt:
            ended = time.time()
            made = Receipt(
                job_id=envelope["id"], batch=envelope["batch"], task=envelope["task"],
                status=status, pool=state.pool, worker=state.worker_id, attempt=attempt,
                started_at=started, ended_at=ended, duration=round(ended - started, 6),
                error=error,
            )  # fmt: skip
            if result is not None:
                made["result"] = result_summary(result)
            return made

        if not await begin(
            redis, keys, envelope, receipt("running", None), arq_id=arq_id,
            worker_id=state.worker_id,
        ):  # fmt: skip
            bound.info("job_cancelled", reason="cancelled before it started")
            return {"status": "cancelled"}
        if attempt > max_tries:
            # Every earlier run ended without an outcome: the process died under it.
            error = f"interrupted: {attempt - 1} runs ended without an outcome"
            final = receipt("failed", error)
            dead = _dead(envelope, "interrupted", error, final)
            await record(redis, keys, final, finished=True, dead=dead, arq_job_id=arq_id)
            bound.warning("dead_lettered", reason="interrupted", error=error)
            return {"status": "failed", "error": error}
        if problem := definition.signature_problem(envelope["args"], envelope.get("kwargs", {})):
            # A run would only fail the same way max_tries times.
            final = receipt("failed", problem)
            dead = _dead(envelope, "invalid_args", problem, final)
            await record(redis, keys, final, finished=True, dead=dead, arq_job_id=arq_id)
            bound.warning("dead_lettered", reason="invalid_args", error=problem)
            return {"status": "failed", "error": problem}
        state.ran(+1)
        try:
            timeout = min(meta.get("timeout") or settings.job_timeout, settings.job_timeout)
            with running.scope, anyio.fail_after(timeout):
                result = await definition.function(*envelope["args"], **envelope.get("kwargs", {}))
        except asyncio.CancelledError:
            state.ran(-1)
            if state.stopping:
                # Cut short by a stop (a second signal, or the grace period ran out):
                # back in line, not held by this worker any more, and not counted.
                with anyio.CancelScope(shield=True), suppress(RedisError, OSError):
                    async with redis.pipeline(transaction=True) as pipe:
                        pipe.decr(arq_jobs.RETRY_KEY_PREFIX + arq_id)
                        pipe.hdel(keys.holding(state.worker_id), arq_id)
                        await pipe.execute()
                bound.info("job_requeued", reason="worker stopped before it finished")
            raise
        except Exception as exc:
            state.ran(-1)
            error = f"{type(exc).__name__}: {exc}"
            if attempt < max_tries:
                await record(
                    redis, keys, receipt("retrying", error), finished=False, arq_job_id=arq_id,
                    running=_running(keys, state),
                )  # fmt: skip
                bound.warning("job_retrying", error=error, max_tries=max_tries)
                raise Retry(defer=settings.retry_delay * attempt) from exc
            final = receipt("failed", error)
            dead = _dead(envelope, "failed", error, final)
            await record(
                redis, keys, final, finished=True, dead=dead, arq_job_id=arq_id,
                running=_running(keys, state),
            )  # fmt: skip
            bound.warning("dead_lettered", reason="failed", error=error)
            return {"status": "failed", "error": error}
        state.ran(-1)
        if running.scope.cancelled_caught:
            # `cancel --running`: not a failure, not retried; kept for `retry --cancelled`.
            final = receipt("cancelled", "cancelled while running (orchestrator cancel --running)")
            await record(
                redis, keys, final, finished=True, arq_job_id=arq_id,
                running=_running(keys, state), cancelled=orjson.dumps(envelope),
            )  # fmt: skip
            _observe(state, envelope, final)
            bound.info("job_cancelled", reason="stopped while running")
            return {"status": "cancelled"}
        final = receipt("succeeded", None, result)
        await record(
            redis, keys, final, finished=True, arq_job_id=arq_id, running=_running(keys, state)
        )
        _observe(state, envelope, final)
        state.done += 1
        bound.info("job_succeeded", duration=round(time.time() - started, 6))
        return {"status": "succeeded"}

    run.__qualname__ = definition.name
    return run


def _leave_when_due(state: WorkerState, released: bool) -> None:
    """Drain and leave, as on SIGTERM, when the pool's scaler released this worker or
    it was idle for `idle_exit`: the signal handler is the one way out, so that a
    release drains exactly like a stop (running jobs finish within grace_period)."""
    if state.stopping:
        return
    idle = state.idle_since is not None and state.idle_exit is not None
    if idle and time.time() - (state.idle_since or 0.0) >= (state.idle_exit or 0.0):
        log.info("worker_leaving", pool=state.pool, worker=state.worker_id, reason="idle_exit")
    elif released:
        log.info("worker_leaving", pool=state.pool, worker=state.worker_id, reason="released")
    else:
        return
    os.kill(os.getpid(), signal.SIGTERM)


def _running(keys: Keys, state: WorkerState) -> RunningCount:
    """The heartbeat's `running` field, written with the receipt that changed it, so
    `status` never shows a job running after its receipt."""
    return RunningCount(keys.worker(state.pool, state.worker_id), state.running, state.ttl)


def _ttl(interval: float) -> int:
    """A heartbeat outlives three missed beats."""
    return max(1, math.ceil(interval * 3))


def _observe(state: WorkerState, envelope: Job, receipt: Receipt) -> None:
    state.metrics.jobs.labels(state.pool, receipt["status"]).inc()
    state.metrics.duration.labels(state.pool, envelope["task"], receipt["status"]).observe(
        receipt["duration"]
    )


def _dead(envelope: Job, reason: str, error: str, receipt: Receipt) -> DeadLetter:
    return DeadLetter(
        job_id=envelope["id"], reason=reason, error=error, at=time.time(), payload=envelope,
        receipt=receipt,
    )  # fmt: skip


@asynccontextmanager
async def _heartbeat(
    redis: Redis, keys: Keys, interval: float, state: WorkerState
) -> AsyncIterator[None]:
    """Announce the worker's slots every `interval`; the key outlives three missed beats."""
    key = keys.worker(state.pool, state.worker_id)

    async def beat() -> None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={
                "pool": state.pool, "worker": state.worker_id, "host": socket.gethostname(),
                "pid": os.getpid(), "slots": state.slots, "running": state.running,
                "version": __version__, "time": time.time(), "tasks": ",".join(state.tasks),
                "launch": state.launch_id, "draining": "1" if state.stopping else "",
                "idle_since": "" if state.idle_since is None else f"{state.idle_since:.3f}",
            })  # fmt: skip
            pipe.expire(key, state.ttl)
            pipe.sadd(keys.workers(state.pool), state.worker_id)
            pipe.hset(keys.holders, state.worker_id, state.pool)
            pipe.sismember(keys.release(state.pool), state.worker_id)
            *_, released = await pipe.execute()
        state.metrics.beat()
        _leave_when_due(state, bool(released))

    async def beat_forever() -> None:
        while True:
            await anyio.sleep(interval)
            try:
                await beat()
            except Exception as exc:  # Redis away: keep the process, the key will lapse
                log.warning("heartbeat_failed", error=str(exc))

    await beat()
    await redis.publish(keys.events, state.pool)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(beat_forever)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
            with anyio.CancelScope(shield=True), suppress(Exception):
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.delete(key)
                    pipe.srem(keys.workers(state.pool), state.worker_id)
                    pipe.srem(keys.release(state.pool), state.worker_id)
                    pipe.publish(keys.events, state.pool)
                    await pipe.execute()
