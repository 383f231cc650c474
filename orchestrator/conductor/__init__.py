"""The conductor: takes jobs off the backlogs and forwards each to a pool's arq queue.

`rounds` is the loop; `wakeup` what wakes it (it never polls); `forwarding` parses,
routes and forwards a round's jobs (one Lua script); `ratelimits` which token buckets a
job passes; `liveness` its heartbeat and the recovery of dead peers and workers. The
scaler, the retention pruner and the scheduler run inside it, and it reads the bare
lines producers push.

May import: the core, dispatch, retention, scaling, schedules.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
