"""arq's ends of a job, copied from arq 0.28's `Worker.finish_job` and
`Worker.finish_failed_job` for `WakeableWorker` (see `worker/arq_hooks.py`; the contract
test pins the sources copied), each one MULTI. `end_run`'s, staged as arq stages it, is
sent as one script call (`one_call`): a job's end is the worker's busiest step.

`end_run` also runs the commands the job's runner staged for its end (`Outcome`: its
receipt, slot, dead letter, wake-up) in the same step. Both leave out arq's
`ZREM arq:abort <id>`: that key has no hash tag, so on a Redis Cluster it lives in another
slot than the job's keys and the MULTI would be refused; the worker never sets
`allow_abort_jobs`, so nothing is ever added there.
"""

from __future__ import annotations

from collections.abc import Callable

from arq.connections import ArqRedis
from arq.utils import to_ms
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from orchestrator import arq_jobs, one_call

# A job's end as its runner staged it, added to the MULTI where arq ends the job.
Outcome = Callable[[Pipeline], None]


async def end_run(
    pool: ArqRedis, run: AsyncScript, queue: str, job_id: str, finish: bool,
    result_data: bytes | None, result_timeout_s: float | None, keep_result_forever: bool,
    incr_score: int | None, keep_in_progress: float | None, outcome: Outcome | None,
) -> None:  # fmt: skip
    """arq's end of a run: claim dropped; when `finish`, the result kept and the job
    deleted and taken out of the queue; when `incr_score`, pushed back for its retry.
    `run`: `one_call.commands` bound to `pool`."""
    async with pool.pipeline(transaction=True) as tr:
        if outcome is not None:
            outcome(tr)
        delete_keys = []
        in_progress_key = arq_jobs.IN_PROGRESS_KEY_PREFIX + job_id
        if keep_in_progress is None:
            delete_keys += [in_progress_key]
        else:
            tr.pexpire(in_progress_key, to_ms(keep_in_progress))
        if finish:
            if result_data:
                expire = None if keep_result_forever else result_timeout_s
                tr.set(arq_jobs.RESULT_KEY_PREFIX + job_id, result_data, px=to_ms(expire))
            delete_keys += [arq_jobs.RETRY_KEY_PREFIX + job_id, arq_jobs.JOB_KEY_PREFIX + job_id]
            tr.zrem(queue, job_id)
        elif incr_score:
            tr.zincrby(queue, incr_score, job_id)
        if delete_keys:
            tr.delete(*delete_keys)
        await one_call.execute(run, tr)


async def end_failed(
    pool: ArqRedis, queue: str, job_id: str, result_data: bytes | None,
    keep_result_forever: bool, keep_result_s: float,
) -> None:  # fmt: skip
    """arq's end of a job it could not run (its payload gone or unreadable)."""
    async with pool.pipeline(transaction=True) as tr:
        tr.delete(
            arq_jobs.RETRY_KEY_PREFIX + job_id,
            arq_jobs.IN_PROGRESS_KEY_PREFIX + job_id,
            arq_jobs.JOB_KEY_PREFIX + job_id,
        )
        tr.zrem(queue, job_id)
        keep_result = keep_result_forever or keep_result_s > 0
        if result_data is not None and keep_result:
            expire = 0 if keep_result_forever else keep_result_s
            tr.set(arq_jobs.RESULT_KEY_PREFIX + job_id, result_data, px=to_ms(expire))
        await tr.execute()
