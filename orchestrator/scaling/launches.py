"""The records the scaler keeps in Redis, read by `status`, `verify`, `demo` and metrics.

One `Launch` per worker the scaler started (`Keys.launches(pool)`, launch id → JSON),
and the scaler's last view of each pool (`Keys.scaler_state(pool)`, a flat hash). A
launched worker announces its launch id in its heartbeat (`launch`), which is how a
heartbeat is matched to the launch that asked for it and how boot time is measured.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from redis.asyncio import Redis
from typing_extensions import TypedDict

from orchestrator.keys import Keys

LaunchState = Literal["launching", "active", "draining", "gone", "failed"]
LIVE: tuple[LaunchState, ...] = ("launching", "active", "draining")  # still paid for
KEEP_SECONDS = 2 * 86_400  # launch records and spend counters outlive a day of reports


class Launch(TypedDict):
    launch_id: str
    pool: str
    provider: str
    state: LaunchState
    launched_at: float
    booted_at: float | None  # its first heartbeat
    released_at: float | None  # asked to drain (release, budget), or found gone
    ended_at: float | None  # its heartbeat is gone: no longer paid for
    worker: str | None  # the worker id its heartbeat carries
    error: str | None  # why it failed (a launch command's exit, a boot timeout)


def day(at: float) -> str:
    """The UTC day a budget counts in: `YYYY-MM-DD`."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def paid_seconds(launch: Launch, now: float) -> float:
    """Seconds a launch has been paid for: from launch until it ended (or now)."""
    end = launch["ended_at"] if launch["ended_at"] is not None else now
    return max(0.0, end - launch["launched_at"])


async def read_launches(redis: Redis, keys: Keys, pool: str) -> list[Launch]:
    """Every launch record of `pool`, oldest first."""
    raw = await redis.hvals(keys.launches(pool))  # type: ignore[misc]
    launches: list[Launch] = [orjson.loads(value) for value in raw]
    return sorted(launches, key=lambda launch: launch["launched_at"])


async def spend_today(redis: Redis, keys: Keys, pool: str, now: float) -> float:
    return float(await redis.get(keys.spend(pool, day(now))) or 0.0)
