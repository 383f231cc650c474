"""Dispatch: producing work. A manifest queued on a backlog, validated whole and each
job exactly once (`manifests`); the bare lines a producer in any language pushes itself,
turned into envelopes when the conductor takes them (`bare_lines`).

May import: the core.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
