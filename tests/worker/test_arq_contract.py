"""What we rely on in arq, checked against the installed arq.

`orchestrator/worker/arq_hooks.py` overrides private `Worker` methods and `orchestrator/arq_jobs.py`
writes arq's jobs and keys itself (the conductor enqueues in Lua). A new arq may change
any of it without notice: each check here fails with what changed, the arq installed and
the one this was written against, and where to look.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import orjson
import pytest
from arq import constants
from arq.jobs import JobDef, deserialize_job
from arq.worker import Worker, func
from redis.asyncio import ConnectionPool

from orchestrator import arq_jobs
from orchestrator.job import Job
from orchestrator.keys import Keys
from orchestrator.worker.arq_hooks import WakeableWorker
from orchestrator.worker.claimed_reads import ClaimedReads, Read, answer_first_read
from orchestrator.worker.pool_wake import PoolWake

TESTED = "0.28.0"  # the arq this contract was last checked against
INSTALLED = version("arq")
HOOKS = "orchestrator/worker/arq_hooks.py hooks it — see its docstring"
FORMAT = "orchestrator/arq_jobs.py (and the Lua scripts) rely on it — see its docstring"

# Each private method WakeableWorker overrides or calls, with the parameters it expects.
OVERRIDDEN = {
    "_poll_iteration": ["self"],
    "start_jobs": ["self", "job_ids"],
    "run_job": ["self", "job_id", "score"],
    "finish_job": [
        "self", "job_id", "finish", "result_data", "result_timeout_s", "keep_result_forever",
        "incr_score", "keep_in_progress",
    ],
    "finish_failed_job": ["self", "job_id", "result_data"],
}  # fmt: skip
# The arq methods WakeableWorker replaces rather than wraps, by a digest of their source:
# a new arq's version must be read and the replacement brought in line before this moves.
REPLACED = {
    "start_jobs": "b45797cfa40bed7f",
    "finish_job": "903f09c92830d3fd",
    "finish_failed_job": "3e16087f318a7acf",
}
KEY_PREFIXES = {
    "job_key_prefix": "arq:job:",
    "result_key_prefix": "arq:result:",
    "retry_key_prefix": "arq:retry:",
    "in_progress_key_prefix": "arq:in-progress:",
}


def changed(what: str, where: str = HOOKS) -> str:
    return f"arq {INSTALLED} (tested with {TESTED}): {what}; {where}"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_worker_method_exists_with_its_parameters(name: str) -> None:
    method = getattr(Worker, name, None)
    assert method is not None, changed(f"Worker.{name} is gone")
    assert inspect.iscoroutinefunction(method), changed(f"Worker.{name} is no longer async")
    params = list(inspect.signature(method).parameters)
    assert params == OVERRIDDEN[name], changed(
        f"Worker.{name} now takes ({', '.join(params)}), not ({', '.join(OVERRIDDEN[name])})"
    )


def test_poll_iteration_still_hands_the_ids_it_read_to_start_jobs() -> None:
    source = inspect.getsource(Worker._poll_iteration)
    assert "self.start_jobs(" in source, changed(
        "Worker._poll_iteration no longer calls start_jobs (how the worker knows the queue ran dry)"
    )
    assert "self.finish_job(" in inspect.getsource(Worker.run_job), changed(
        "Worker.run_job no longer calls finish_job (where a job's receipt is written)"
    )


def test_run_job_begins_with_the_read_the_claim_answers() -> None:
    """`claimed_reads` answers run_job's first transaction: its commands must be the
    ones start_jobs.lua runs for it, in this order, and it must come first."""
    source = inspect.getsource(Worker.run_job)
    first = source.index("self.pool.pipeline(")
    assert "await" not in source[:first].replace("async def", ""), changed(
        "Worker.run_job awaits something before its first read"
    )
    read = source[first : source.index("await pipe.execute()", first)]
    assert [line.strip() for line in read.splitlines()[1:4]] == [
        "pipe.get(job_key_prefix + job_id)",
        "pipe.incr(retry_key_prefix + job_id)",
        "pipe.expire(retry_key_prefix + job_id, 88400)",
    ], changed("Worker.run_job's first read changed (what the claim returns for it)")


@pytest.mark.parametrize("name", sorted(REPLACED))
def test_each_replaced_worker_method_is_the_one_its_replacement_copies(name: str) -> None:
    """A replaced method's source is still the arq 0.28 one WakeableWorker mirrors."""
    digest = hashlib.sha256(inspect.getsource(getattr(Worker, name)).encode()).hexdigest()
    assert digest[:16] == REPLACED[name], changed(
        f"Worker.{name} changed (its claims, slots or MULTI may differ from the copy)"
    )


def test_the_worker_attributes_read_by_the_hooks_exist() -> None:
    assert isinstance(inspect.getattr_static(Worker, "pool", None), property), changed(
        "Worker.pool is no longer a property"
    )

    async def noop(ctx: dict[str, Any]) -> None:
        return None

    async def build() -> Worker:
        return WakeableWorker(
            PoolWake(), "pool", [func(noop, name="noop")], keys=Keys("contract"),
            worker_id="w", redis_pool=None, queue_name="q", max_jobs=3, poll_delay=0.001,
        )  # fmt: skip

    worker = asyncio.run(build())
    limit = getattr(worker, "queue_read_limit", None)
    positive = isinstance(limit, int) and limit > 0
    assert positive, changed(f"Worker.queue_read_limit is {limit!r}, not a positive int")
    assert isinstance(getattr(worker, "tasks", None), dict), changed(
        "Worker.tasks (the running jobs, cancelled when Redis goes away) is not a dict"
    )
    # What WakeableWorker.start_jobs takes slots with, as arq's own does.
    assert isinstance(getattr(worker, "sem", None), asyncio.Semaphore), changed(
        "Worker.sem (one permit a running job) is not an asyncio.Semaphore"
    )
    for name in ("job_counter", "max_jobs"):
        assert isinstance(getattr(worker, name, None), int), changed(f"Worker.{name} is not an int")
    timeout = getattr(worker, "in_progress_timeout_s", None)
    assert isinstance(timeout, int | float), changed("Worker.in_progress_timeout_s is gone")
    assert callable(getattr(worker, "_release_sem_dec_counter_on_complete", None)), changed(
        "Worker._release_sem_dec_counter_on_complete (a slot given back) is gone"
    )
    assert getattr(worker, "allow_abort_jobs", None) is False, changed(
        "Worker.allow_abort_jobs is not False by default (arq:abort would be used: not on Cluster)"
    )
    assert getattr(worker, "allow_pick_jobs", None) is True, changed(
        "Worker.allow_pick_jobs (false once a stop began: claim nothing more) is gone"
    )
    assert isinstance(getattr(worker, "loop", None), asyncio.AbstractEventLoop), changed(
        "Worker.loop is gone"
    )
    for public in ("async_run", "close", "handle_sig", "handle_sig_wait_for_completion"):
        assert callable(getattr(worker, public, None)), changed(
            f"Worker.{public} is gone", "orchestrator/worker/process.py calls it"
        )


@pytest.mark.parametrize(("name", "expected"), sorted(KEY_PREFIXES.items()))
def test_key_prefixes_are_what_the_scripts_write(name: str, expected: str) -> None:
    actual = getattr(constants, name, None)
    assert actual == expected, changed(
        f"arq.constants.{name} is {actual!r}, not {expected!r}", FORMAT
    )
    ours = {
        "job_key_prefix": arq_jobs.JOB_KEY_PREFIX,
        "result_key_prefix": arq_jobs.RESULT_KEY_PREFIX,
        "retry_key_prefix": arq_jobs.RETRY_KEY_PREFIX,
        "in_progress_key_prefix": arq_jobs.IN_PROGRESS_KEY_PREFIX,
    }[name]
    assert ours == expected
    assert arq_jobs.run_keys("x").count(expected + "x") == 1


def test_expires_extra_ms_is_a_day() -> None:
    assert constants.expires_extra_ms == 86_400_000, changed(
        f"arq.constants.expires_extra_ms is {constants.expires_extra_ms!r}, not 86400000", FORMAT
    )


def test_a_payload_we_write_is_the_job_arq_reads() -> None:
    job: Any = {"id": "j1", "batch": "b1", "task": "echo", "args": [1, "two"], "kwargs": {}}
    payload = arq_jobs.serialize(job, 1_700_000_000_000)
    read: JobDef = deserialize_job(payload, deserializer=orjson.loads)
    got: tuple[Any, ...] = (read.function, list(read.args), read.kwargs, read.job_try)
    assert got == ("echo", [job], {}, None), changed(
        f"arq reads our serialize_job payload as {got!r}", FORMAT
    )
    assert int(read.enqueue_time.timestamp() * 1000) == 1_700_000_000_000, changed(
        "arq reads another enqueue time from our payload", FORMAT
    )
    assert arq_jobs.envelope_in(payload) == job


def test_serialize_job_still_raises_serialization_error() -> None:
    job: Any = {"id": "j1", "batch": "b1", "task": "echo", "args": [2**70], "kwargs": {}}
    serialize: Callable[[Job, int], bytes] = arq_jobs.serialize
    with pytest.raises(arq_jobs.SerializationError):
        serialize(job, 0)


async def test_a_claimed_read_answers_only_the_read_it_stands_for() -> None:
    """The claim's read answers run_job's first transaction once, in the run's own task,
    and refuses a transaction that is not that read (a new arq's) instead of guessing."""
    client = ClaimedReads(connection_pool=ConnectionPool.from_url("redis://127.0.0.1:1"))
    job_id = Keys("contract").arq_job_id("j1")

    async def run(commands: Callable[[Any], None]) -> list[Any]:
        answer_first_read(Read(job_id, b"payload", 2))
        async with client.pipeline(transaction=True) as pipe:
            commands(pipe)
            replied: list[Any] = await pipe.execute()
        assert not isinstance(client.pipeline(transaction=True), type(pipe)), "answered twice"
        return replied

    def arqs_read(pipe: Any) -> None:
        pipe.get(constants.job_key_prefix + job_id)
        pipe.incr(constants.retry_key_prefix + job_id)
        pipe.expire(constants.retry_key_prefix + job_id, 88400)

    assert await asyncio.create_task(run(arqs_read)) == [b"payload", 2, True]
    with pytest.raises(RuntimeError, match="not the one the claim answers"):
        await asyncio.create_task(run(lambda pipe: pipe.get(constants.job_key_prefix + job_id)))
    await client.aclose()
