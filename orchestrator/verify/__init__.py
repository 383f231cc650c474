"""Verify: a batch's receipts checked against its manifest.

`verifier` makes the report; `sources` reads the batch from Redis or from its archive;
`wait` waits for a batch to settle (`--wait`); `cost` its worker time and cost.

May import: the core, retention.
"""

from __future__ import annotations

from typing import Any

from orchestrator import _moved


def __getattr__(name: str) -> Any:
    """The old module's names, deprecated (see orchestrator/_moved.py)."""
    return _moved.forward(__name__, name)
