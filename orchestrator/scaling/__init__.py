"""Elastic cloud: the scaler launches a pool's workers while the pools before it are full,
releases them when idle, and keeps the day's spend within a budget.

`scaler` holds the lease and runs the loop (inside every conductor); `reads` is what it
reads from Redis; `policy` the decision, pure; `providers` how workers are started;
`launches` the launch records and spend that `status` and `verify` read too.

May import: the core.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
