"""A run's first read, answered by its claim: one Redis round trip a job fewer.

arq's `Worker.run_job` begins with one transaction: the job's payload (`GET`) and its
try counter (`INCR`, then `EXPIRE` 88400 s). `lua/start_jobs.lua` does exactly that for
each job it claims and returns the results with the claim, so the run can start at once:
on a worker whose slots keep the cores busy (sync tasks in child processes), every round
trip between one job's end and the next one's start is a wait for the scheduler to run
Redis and then this process again.

`ClaimedReads` is the worker's arq client. Its `pipeline()` hands the run its read
already done when the running task holds one (`answer_first_read`, set by
`WakeableWorker.run_job` in that run's own task; context variables are per task, so no
other task's pipeline is touched), and the first pipeline taken uses it up. The read is
checked command by command against what was claimed: a different read (a new arq) is
refused loudly rather than answered wrongly. `tests/worker/test_arq_contract.py` pins
`run_job`'s source.
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline

from orchestrator import arq_jobs

# arq keeps a job's try counter this long (`Worker.run_job`); the claim does the same.
RETRY_TTL = 88400


class Read:
    """What the claim read for one job: its payload (None when it was gone) and its
    try counter after the claim's increment."""

    __slots__ = ("job_id", "payload", "tries")

    def __init__(self, job_id: str, payload: bytes | None, tries: int) -> None:
        self.job_id = job_id
        self.payload = payload
        self.tries = tries


_FIRST_READ: ContextVar[Read | None] = ContextVar("claimed_first_read", default=None)


def answer_first_read(read: Read) -> None:
    """The running task's next pipeline is answered with `read`."""
    _FIRST_READ.set(read)


class _Answered:
    """Stands for run_job's first transaction: takes its commands, replies with the
    claim's read, sends nothing."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._calls: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> _Answered:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def get(self, name: str) -> _Answered:
        self._calls.append(("get", name))
        return self

    def incr(self, name: str) -> _Answered:
        self._calls.append(("incr", name))
        return self

    def expire(self, name: str, seconds: int) -> _Answered:
        self._calls.append(("expire", name, seconds))
        return self

    async def execute(self) -> list[Any]:
        job_id = self._read.job_id
        retry = arq_jobs.RETRY_KEY_PREFIX + job_id
        expected = [
            ("get", arq_jobs.JOB_KEY_PREFIX + job_id), ("incr", retry),
            ("expire", retry, RETRY_TTL),
        ]  # fmt: skip
        if self._calls != expected:
            raise RuntimeError(
                f"arq's first read of a job is not the one the claim answers ({self._calls!r}); "
                "see orchestrator/worker/claimed_reads.py and tests/worker/test_arq_contract.py"
            )
        return [self._read.payload, self._read.tries, True]


class ClaimedReads(ArqRedis):
    """The worker's arq client: a run's first read comes from its claim."""

    def pipeline(  # type: ignore[override]
        self, transaction: bool = True, shard_hint: str | None = None
    ) -> Pipeline | _Answered:
        read = _FIRST_READ.get()
        if read is not None and transaction:
            _FIRST_READ.set(None)  # the first one only: the run's end writes for real
            return _Answered(read)
        return super().pipeline(transaction, shard_hint)
