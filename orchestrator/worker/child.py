"""The life of one child process of the `process` executor: it imports the task packages
once, then runs sync tasks one at a time, as its parent asks, until told to stop.

A request is `(task name, args, kwargs, job context)`; the child looks the name up in
its own registry (so no function is ever pickled), runs it for that job and answers
`("ok", result)`, `("retry", delay, reason)` or `("error", type name, message,
traceback)`. The pipe to the parent is trusted (the
parent made it): pickle is fine here, as it never is on Redis. Signals a terminal or
an orchestrator sends to the whole process group (SIGINT, SIGTERM) are the parent's
to act on: a child finishes its job, and the parent ends it. A child whose parent is
gone finds its pipe closed at the next request and exits.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from orchestrator.job_context import RetryLater, serving

Reply = tuple[Any, ...]


def serve(conn: Connection, packages: tuple[str, ...], worker: int) -> None:
    """The child's main: answer requests until None or the end of the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _end_with_worker(worker)
    from orchestrator.registry import task_registry

    try:
        registry = task_registry(packages)
    except BaseException as exc:  # reported to the parent, which says it in one line
        conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        name, args, kwargs, job = request
        with serving(job):
            reply = _run(registry[name].function, args, kwargs)
        try:
            conn.send(reply)  # pickled whole before a byte is written
        except OSError:
            return
        except Exception as exc:  # a result pickle refuses: a lock, a generator, a file
            # said, rather than a parent left waiting for an answer that never comes
            kind = type(reply[1]).__name__ if reply[0] == "ok" else reply[1]
            message = f"the task's result ({kind}) cannot leave its process: {exc}"
            conn.send(("error", "UnpicklableResult", message, ""))


def _run(function: Any, args: list[Any], kwargs: dict[str, Any]) -> Reply:
    try:
        return ("ok", function(*args, **kwargs))
    except RetryLater as exc:
        return ("retry", exc.delay, exc.reason)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a task are its errors
        return ("error", type(exc).__name__, str(exc), traceback.format_exc())


def _end_with_worker(worker: int) -> None:
    """End this child when the worker that asked for it ends, however it ends: a worker
    SIGKILLed mid-job (the OOM killer) must not leave its job running on here while the
    job is given to another worker. (The child's parent is the fork server, which lives
    on while any child does, so the kernel's parent-death signal would not come.) A
    pidfd of the worker, opened while it is alive, turns readable when it exits."""
    try:
        handle = os.pidfd_open(worker)
    except (AttributeError, OSError):  # no pidfd here: look every second instead
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(worker):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-worker", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
