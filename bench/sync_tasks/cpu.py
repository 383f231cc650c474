"""Plain (sync) tasks as people write them: CPU-bound Python, and a blocking call."""

from __future__ import annotations

import time

from orchestrator.registry import task


@task
def spin(seconds: float) -> int:
    """About `seconds` of pure-Python CPU work (it holds the GIL throughout)."""
    deadline = time.thread_time() + seconds
    loops = 0
    while time.thread_time() < deadline:
        loops += 1
    return loops


@task
def nap(seconds: float) -> float:
    """A blocking wait, as an HTTP call or a database query is to the worker."""
    time.sleep(seconds)
    return seconds
