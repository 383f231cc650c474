"""Celery tasks in the registry, run as a Celery user expects, with no Celery broker,
result backend or worker: Celery is a library of decorators here, nothing more.

A module in `task_packages` may define its tasks with Celery's decorators (`@app.task`,
`@shared_task`, with `bind=True`, `name=`…, as the replaced system's
`backend/tasks/<category>.py` did); the registry registers each under its Celery name
(`image.analyze`, or Celery's default, `backend.tasks.image.flaky`). A run sets
`self.request` (`id` is the job's id; `retries`, `args`, `kwargs`). `self.retry()` and
`autoretry_for` (with `max_retries`, `default_retry_delay`, `retry_backoff`) become this
project's retries, with their delays; `time_limit` is the job's timeout and
`soft_time_limit` raises `SoftTimeLimitExceeded` inside the task (in a child process of
the `process` executor: it needs the process's own timer). A raised exception fails the
job at once, as in Celery; a run that ended without an outcome (its process died) is
run again, within `max_retries`. What needs a broker — `.delay()`, `.apply_async()`,
`send_task`, canvas (chain, group, chord) — is refused with one line naming it, never
sent to a broker nobody runs.
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import ModuleType
from typing import Any

from orchestrator.errors import UserError
from orchestrator.job_context import RetryLater, current_job
from orchestrator.registry import task_name_problem

CELERY_EXTRA = "pip install -e '.[celery]'"
UNLIMITED_TRIES = 1_000_000  # Celery's max_retries=None: retry for as long as it asks


class CeleryUnsupported(RuntimeError):
    """A Celery feature that needs Celery's broker, used inside a task."""


def celery_tasks(module: ModuleType) -> Iterator[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """(name, function to run, its TaskDef options) for each Celery task `module` defines;
    a name that cannot be a task name here is one line saying which to give."""
    if "celery" not in sys.modules:
        return
    from celery.app.task import Task

    _without_broker()
    for value in list(vars(module).values()):
        try:
            if not isinstance(value, Task):  # a proxy (shared_task) resolves here
                continue
            task = value._get_current_object() if hasattr(value, "_get_current_object") else value
        except Exception:  # a proxy of something else that cannot resolve: not a task
            continue
        if getattr(task, "__module__", None) != module.__name__:
            continue  # imported from another module, registered there
        if problem := name_problem(task.name, module.__name__):
            raise UserError(problem)
        yield task.name, _adapter(task), _options(task)


def name_problem(name: str, module: str) -> str | None:
    """Why a Celery task's name cannot be a task name here (the registry's rule), with
    a `name=` that would be, or None."""
    if task_name_problem(name) is None:
        return None
    fitting = re.sub(r"[^a-z0-9_.]+", "_", name.lower()).strip("._")[:60] or "category.name"
    if "." not in fitting:
        fitting = f"{module.rsplit('.', 1)[-1]}.{fitting}"
    return (
        f"Celery task {name[:100]!r} in {module}: a task name here is lower_case.dotted "
        f"(e.g. image.analyze); give it one: @shared_task(name={fitting!r})"
    )


def _options(task: Any) -> dict[str, Any]:
    """The task's own policy: as many runs as its retries allow (`max_retries`, or the
    `retry_kwargs` of its `autoretry_for`), its `time_limit`, and no retry of its own
    exceptions (a run whose process died is retried, within the settings' max_tries)."""
    own = task.max_retries
    autoretry = (getattr(task, "retry_kwargs", None) or {}).get("max_retries", own)
    tries = UNLIMITED_TRIES if own is None or autoretry is None else max(own, autoretry) + 1
    return {"max_tries": tries, "timeout": task.time_limit, "retry_errors": False}


def _adapter(task: Any) -> Callable[..., Any]:
    """A plain function that runs `task` for the current job, as Celery's worker would."""

    @functools.wraps(task.run)
    def run(*args: Any, **kwargs: Any) -> Any:
        job = current_job()
        about = {"id": job.id, "retries": job.attempt - 1, "group": job.batch} if job else {}
        task.push_request(
            args=list(args), kwargs=dict(kwargs), called_directly=False, is_eager=False,
            delivery_info={}, hostname="orchestrator", **about,
        )  # fmt: skip
        try:
            with _soft_limit(task.soft_time_limit):
                return task.run(*args, **kwargs)  # autoretry_for's wrapper, when it has one
        finally:
            task.pop_request()

    return run


@contextmanager
def _soft_limit(seconds: float | None) -> Iterator[None]:
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    from celery.exceptions import SoftTimeLimitExceeded

    def expired(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds:g} s) exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _retry(
    self: Any,
    args: Any = None,
    kwargs: Any = None,
    exc: BaseException | None = None,
    throw: bool = True,
    eta: datetime | None = None,
    countdown: float | None = None,
    max_retries: int | None = None,
    **options: Any,
) -> Any:
    """`Task.retry`: the job runs again after `countdown` (else `default_retry_delay`)
    with its own arguments, until `max_retries`; then `exc` (or MaxRetriesExceededError)
    fails it."""
    if args is not None or kwargs is not None:
        raise CeleryUnsupported("self.retry(args=…, kwargs=…): a job is retried with its own")
    request = self.request
    limit = self.max_retries if max_retries is None else max_retries
    if limit is not None and request.retries + 1 > limit:
        if exc is not None:
            raise exc
        raise self.MaxRetriesExceededError(
            f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}"
        )
    if eta is not None:
        delay = (eta - datetime.now(eta.tzinfo)).total_seconds()
    else:
        delay = self.default_retry_delay if countdown is None else countdown
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "retry requested"
    raise RetryLater(max(0.0, float(delay or 0)), reason)


def _refused(feature: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise CeleryUnsupported(
            f"{feature} needs a Celery broker, and there is none here: queue follow-up work "
            "as jobs (a manifest line and `orchestrator dispatch`, or a line pushed on a "
            "backlog), or do it in this task"
        )

    return refuse


@functools.cache
def _without_broker() -> None:
    """Celery's calls that would reach for a broker, refused in this process; retry
    made this project's. Once per process, before any Celery task runs."""
    from celery import Celery
    from celery import canvas as c
    from celery.app.task import Task

    Task.retry = _in_jobs(Task.retry, _retry)
    Task.apply_async = _in_jobs(Task.apply_async, _refused("task.delay() / task.apply_async()"))
    Celery.send_task = _in_jobs(Celery.send_task, _refused("app.send_task()"))
    c.Signature.apply_async = _in_jobs(
        c.Signature.apply_async, _refused("signature.delay() / .apply_async()")
    )
    for kind, name in (
        (c._chain, "chain"), (c.group, "group"), (c._chord, "chord"),
        (c._basemap, "map, starmap"), (c.chunks, "chunks"),
    ):  # fmt: skip
        kind.apply_async = _in_jobs(kind.apply_async, _refused(f"canvas ({name})"))


def _in_jobs(original: Callable[..., Any], here: Callable[..., Any]) -> Callable[..., Any]:
    """`here` inside a job this project runs, Celery's own `original` anywhere else: a
    process that also talks to a real Celery (an app dispatching to both during a move)
    keeps its `.delay()`."""

    @functools.wraps(original)
    def choose(*args: Any, **kwargs: Any) -> Any:
        return (original if current_job() is None else here)(*args, **kwargs)

    return choose
