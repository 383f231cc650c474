"""Which job the running task is serving: its id, batch and attempt, for a task that
wants to know (`current_job()`), and for Celery tasks' `self.request`.

Set by the worker's runner around each run (a context variable: each asyncio task and
each executor thread sees its own), and by a child process of the `process` executor
around each job it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobContext:
    id: str  # the job's id, as in the manifest line or derived at dispatch
    batch: str
    attempt: int  # 1 on the first run


_CURRENT: ContextVar[JobContext | None] = ContextVar("orchestrator_job", default=None)


def current_job() -> JobContext | None:
    """The job the calling task runs for; None outside a worker's run."""
    return _CURRENT.get()


@contextmanager
def serving(job: JobContext) -> Iterator[None]:
    token = _CURRENT.set(job)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class RetryLater(Exception):
    """Raised by a task to run its job again after `delay` seconds (Celery's
    `self.retry()` raises it): a `retrying` receipt now, the next run then."""

    def __init__(self, delay: float, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
