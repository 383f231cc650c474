"""A worker's job runner: the arq function for each registry task — arguments checked
against the task before a run, a receipt per job (with the heartbeat's `running` count
in the same step), attempts counted against `max_tries`, a dead letter for jobs that
failed for good, and a run cut short by a stop put back in line without counting it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import orjson
import structlog
from arq.worker import Retry
from redis.asyncio import Redis

from orchestrator import arq_jobs, tracing
from orchestrator.job import Job
from orchestrator.job_context import JobContext, RetryLater, serving
from orchestrator.keys import Keys
from orchestrator.receipts import DeadLetter, Receipt, result_summary, stage
from orchestrator.registry import TaskDef
from orchestrator.settings import Settings
from orchestrator.worker.executors import ChildDied, Executor, TaskFailed
from orchestrator.worker.heartbeat import running_count
from orchestrator.worker.state import WorkerState, on_the_way_out
from orchestrator.worker.stops import RunningJob, begin

_LOG = structlog.get_logger("orchestrator.worker")


def runner(
    definition: TaskDef, settings: Settings, keys: Keys, state: WorkerState, executor: Executor
) -> Callable[[dict[str, Any], Job], Awaitable[dict[str, Any]]]:
    """The arq function for one task: the envelope in, a receipt out, whatever happens.
    An async task is awaited here, on the loop; a sync one runs in `executor`."""
    # A logger resolved once, as configured now (at the worker's start), rather than by
    # the lazy proxy at every call.
    log = _LOG.bind()
    function, is_async = definition.function, definition.is_async
    own_timeout = min(definition.timeout or settings.job_timeout, settings.job_timeout)

    async def run(ctx: dict[str, Any], envelope: Job) -> dict[str, Any]:
        running = RunningJob(envelope["batch"], envelope["id"])
        state.jobs[ctx["job_id"]] = running  # so that `cancel --running` can stop it
        try:
            if tracing.enabled:
                return await run_traced(ctx, envelope, running)
            return await run_tracked(ctx, envelope, running)
        finally:
            state.jobs.pop(ctx["job_id"], None)

    async def run_traced(ctx: dict[str, Any], envelope: Job, running: RunningJob) -> dict[str, Any]:
        """The run as a CONSUMER span, child of the conductor's routing span (whose
        context the envelope carries), from its start to its receipt."""
        (pool,) = (p for p in settings.pools if p.name == state.pool)
        queue = pool.queue or keys.pool_queue(state.pool)
        attributes = tracing.messaging(
            "process", "process", queue, **{
                "messaging.message.id": envelope["id"], "orchestrator.batch": envelope["batch"],
                "orchestrator.task": envelope["task"], "orchestrator.pool": state.pool,
                "orchestrator.attempt": ctx["job_try"], "orchestrator.worker": state.worker_id,
            },
        )  # fmt: skip
        parent = tracing.context_of(envelope.get("meta"))
        with tracing.span(
            f"process {queue}", kind="consumer", parent=parent, attributes=attributes
        ) as span:
            try:
                outcome = await run_tracked(ctx, envelope, running)
            except Retry as retry:
                tracing.ended(span, "retrying", _kind_of(retry.__cause__))
                raise
            except asyncio.CancelledError:
                tracing.ended(span, "requeued" if state.stopping else "interrupted")
                raise
            error = outcome.get("error")
            tracing.ended(span, outcome["status"], error.partition(":")[0] if error else None)
            return outcome

    async def run_tracked(
        ctx: dict[str, Any], envelope: Job, running: RunningJob
    ) -> dict[str, Any]:
        redis: Redis = ctx["redis"]
        meta = envelope.get("meta", {})
        attempt: int = ctx["job_try"]
        arq_id: str = ctx["job_id"]
        max_tries = meta.get("max_tries") or definition.max_tries or settings.max_tries
        # Each event's context, passed with it: no logger bound per job, and an event
        # the level filters out costs one no-op call.
        about: dict[str, Any] = {"job_id": envelope["id"], "task": envelope["task"]}
        about |= {"pool": state.pool, "attempt": attempt}
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

        def end(final: Receipt, **how: Any) -> None:
            """The job's end, written with arq's (`WakeableWorker.finish_job`)."""
            state.outcomes[arq_id] = partial(
                stage, keys=keys, receipt=final, arq_job_id=arq_id, **how
            )

        began = arq_id in state.begun  # by its claim, unless it was cancelled
        if not began and not await begin(
            redis, keys, envelope, receipt("running", None), arq_id=arq_id,
            worker_id=state.worker_id,
        ):  # fmt: skip
            log.info("job_cancelled", **about, reason="cancelled before it started")
            return {"status": "cancelled"}
        if attempt > max_tries:
            # Every earlier run ended without an outcome: the process died under it.
            error = f"interrupted: {attempt - 1} runs ended without an outcome"
            final = receipt("failed", error)
            end(final, finished=True, dead=_dead(envelope, "interrupted", error, final))
            log.warning("dead_lettered", **about, reason="interrupted", error=error)
            return {"status": "failed", "error": error}
        if problem := definition.signature_problem(envelope["args"], envelope.get("kwargs", {})):
            # A run would only fail the same way max_tries times.
            final = receipt("failed", problem)
            end(final, finished=True, dead=_dead(envelope, "invalid_args", problem, final))
            log.warning("dead_lettered", **about, reason="invalid_args", error=problem)
            return {"status": "failed", "error": problem}
        state.ran(+1)
        try:
            timeout = min(meta.get("timeout") or own_timeout, own_timeout)
            args, kwargs = envelope["args"], envelope.get("kwargs", {})
            job = JobContext(envelope["id"], envelope["batch"], attempt)
            with running.scope, anyio.fail_after(timeout), serving(job):
                if is_async:
                    result = await function(*args, **kwargs)
                else:
                    result = await executor.run(definition.name, function, args, kwargs, job)
        except asyncio.CancelledError:
            state.ran(-1)
            if state.stopping:
                # Cut short by a stop (a second signal, or the grace period ran out):
                # back in line, not held by this worker any more, and not counted.
                async def put_back() -> None:
                    async with redis.pipeline(transaction=True) as pipe:
                        pipe.decr(arq_jobs.RETRY_KEY_PREFIX + arq_id)
                        pipe.hdel(keys.holding(state.worker_id), arq_id)
                        await pipe.execute()

                if await on_the_way_out(state, "requeue", put_back):
                    log.info("job_requeued", **about, reason="worker stopped before it finished")
                else:  # Redis away: counted in `worker_stopped`, run again after recovery
                    log.debug("job_abandoned", **about, reason="redis unavailable")
            raise
        except Exception as exc:
            state.ran(-1)
            if isinstance(exc, RetryLater):  # the task asked for it (Celery's self.retry)
                error, delay, asked = exc.reason, exc.delay, True
                again = attempt < max_tries
            else:
                kind = exc.type_name if isinstance(exc, TaskFailed) else type(exc).__name__
                error, delay, asked = f"{kind}: {exc}", settings.retry_delay * attempt, False
                # A Celery task fails at once on its own exception, as in Celery; a run
                # that ended without an outcome (its process died) is run again, within
                # the settings' max_tries whatever its own retry limit.
                died = isinstance(exc, ChildDied) and attempt < settings.max_tries
                again = attempt < max_tries and (definition.retry_errors or died)
            if again:
                end(receipt("retrying", error), finished=False, running=running_count(keys, state))
                log.warning(
                    "job_retrying", **about, error=error, max_tries=max_tries, delay=delay,
                    asked=asked,
                )  # fmt: skip
                raise Retry(defer=delay) from exc
            final = receipt("failed", error)
            dead = _dead(envelope, "failed", error, final)
            end(final, finished=True, dead=dead, running=running_count(keys, state))
            log.warning("dead_lettered", **about, reason="failed", error=error)
            return {"status": "failed", "error": error}
        state.ran(-1)
        if running.scope.cancelled_caught:
            # `cancel --running`: not a failure, not retried; kept for `retry --cancelled`.
            final = receipt("cancelled", "cancelled while running (orchestrator cancel --running)")
            end(
                final, finished=True, running=running_count(keys, state),
                cancelled=orjson.dumps(envelope),
            )  # fmt: skip
            state.metrics.finished(state.pool, envelope["task"], "cancelled", final["duration"])
            log.info("job_cancelled", **about, reason="stopped while running")
            return {"status": "cancelled"}
        final = receipt("succeeded", None, result)
        end(final, finished=True, running=running_count(keys, state))
        state.metrics.finished(state.pool, envelope["task"], "succeeded", final["duration"])
        state.done += 1
        log.info("job_succeeded", **about, duration=final["duration"])
        return {"status": "succeeded"}

    run.__qualname__ = definition.name
    return run


def _kind_of(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return exc.type_name if isinstance(exc, TaskFailed) else type(exc).__qualname__


def _dead(envelope: Job, reason: str, error: str, receipt: Receipt) -> DeadLetter:
    return DeadLetter(
        job_id=envelope["id"], reason=reason, error=error, at=time.time(), payload=envelope,
        receipt=receipt,
    )  # fmt: skip
