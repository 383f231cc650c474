"""Watching: one atomic snapshot of the whole service, and how it reads.

`snapshot` reads it (one Lua script); `model` is its data and `--json` schema; `batches`
counts a batch's jobs; `scaler` tells a pool's scaler; `view` and `watch` draw it on a
terminal (`glyphs` its bars and cells); `batch_detail` is one batch's jobs for the dashboard.

May import: the core, control, scaling, verify.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
