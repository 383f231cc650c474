"""The worker: an arq worker process per pool member that claims, runs and records jobs.

`process` is the process (drain on SIGTERM, hand-back on a second signal); `state` what
it knows of itself; `heartbeat` its heartbeat, release and idle exit; `runner` the task
runner (receipts, retries, dead letters); `stops` the check before a start and `cancel
--running`; `arq_hooks` the only use of arq's private API; `executors` where sync
tasks run (child processes or threads), `child` the life of one child process.

May import: the core.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
