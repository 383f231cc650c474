"""System checks: sleepers that load the pools, echo, and a database round trip."""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

from orchestrator.registry import task
from orchestrator.settings import load_settings


@task
async def sleep(seconds: float) -> dict[str, float]:
    """Hold a worker slot for `seconds`: the stress test's unit of load."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    await anyio.sleep(seconds)
    return {"slept": seconds}


@task
async def echo(*args: Any) -> list[Any]:
    """Return the arguments: proves the path from manifest to worker and back."""
    return list(args)


@task
async def crud(key: str, value: str, database: str | None = None) -> dict[str, Any]:
    """Write a row, read it back, delete it, and fail loudly if any step disagrees."""
    path = Path(database) if database else load_settings().crud_database
    return await anyio.to_thread.run_sync(_crud_round_trip, path, key, value)


def _crud_round_trip(path: Path, key: str, value: str) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Several workers share the file: WAL lets readers run beside the one writer, and
    # the busy timeout waits out a concurrent transaction instead of failing at once.
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS crud_check (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT OR REPLACE INTO crud_check (key, value) VALUES (?, ?)", (key, value))
        row = db.execute("SELECT value FROM crud_check WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] != value:
            raise RuntimeError(f"crud check {key!r}: wrote {value!r}, read back {row!r}")
        db.execute("DELETE FROM crud_check WHERE key = ?", (key,))
        if db.execute("SELECT 1 FROM crud_check WHERE key = ?", (key,)).fetchone():
            raise RuntimeError(f"crud check {key!r}: row still present after delete")
    return {
        "key": key,
        "database": str(path),
        "ms": round((time.perf_counter() - started) * 1e3, 3),
    }
