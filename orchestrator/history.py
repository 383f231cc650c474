"""History: what the dashboard charts over time — jobs finished per pool (succeeded,
failed), backlog depths and cloud spend — in per-minute buckets that expire.

No service of its own: the processes that already count write it in the steps they
take anyway. A worker adds its job's outcome in the MULTI that writes the receipt
(`receipts.stage`), a conductor notes the backlog depths it reads on each heartbeat
(`conductor.liveness`), the scaler adds what it charged in the step that adds to the
day's spend (`scaling.scaler`). One hash per minute (`Keys.history`) holds all three,
and each write sets the hash to expire a day after its minute ends: however long the
service runs, Redis holds at most `MAX_BUCKETS` of them, each a few fields per pool and
backlog (tests/test_history.py proves the bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from orchestrator.keys import Keys

BUCKET_SECONDS = 60
KEEP_SECONDS = 86_400  # a bucket lives this long after its minute ends
MAX_MINUTES = KEEP_SECONDS // BUCKET_SECONDS  # the longest history one can ask for
DEFAULT_MINUTES = 60
# Buckets alive at any instant: those that ended less than KEEP_SECONDS ago, and the
# current one.
MAX_BUCKETS = MAX_MINUTES + 2

SUCCEEDED, FAILED, DEPTH, SPEND = "succeeded", "failed", "depth", "spend"
KINDS = (SUCCEEDED, FAILED, DEPTH, SPEND)


def bucket_of(at: float) -> int:
    return int(at // BUCKET_SECONDS)


def _expires_at(bucket: int) -> int:
    return (bucket + 1) * BUCKET_SECONDS + KEEP_SECONDS


def stage_outcome(pipe: Pipeline, keys: Keys, pool: str, succeeded: bool, at: float) -> None:
    """Add to a MULTI one job of `pool` finished at `at`, for good (no retry follows)."""
    bucket = bucket_of(at)
    key = keys.history(bucket)
    pipe.hincrby(key, f"{SUCCEEDED if succeeded else FAILED}:{pool}", 1)
    pipe.expireat(key, _expires_at(bucket))


def stage_spend(pipe: Pipeline, keys: Keys, pool: str, cost: float, at: float) -> None:
    """Add to a MULTI the money `pool`'s launched workers cost up to `at`."""
    bucket = bucket_of(at)
    key = keys.history(bucket)
    pipe.hincrbyfloat(key, f"{SPEND}:{pool}", cost)
    pipe.expireat(key, _expires_at(bucket))


async def note_depths(redis: Redis, keys: Keys, depths: Mapping[str, int], at: float) -> None:
    """The backlogs' depths as seen at `at`: the last sample of a minute is its value
    (several conductors write the same figures; whichever is last is as true)."""
    if not depths:
        return
    bucket = bucket_of(at)
    key = keys.history(bucket)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={f"{DEPTH}:{name}": depth for name, depth in depths.items()})
        pipe.expireat(key, _expires_at(bucket))
        await pipe.execute()


def span(minutes: int | None) -> int:
    """The minutes a reader may ask for: `DEFAULT_MINUTES` when not said, a day at most."""
    if minutes is None:
        return DEFAULT_MINUTES
    return max(1, min(MAX_MINUTES, minutes))


async def read(redis: Redis, keys: Keys, minutes: int, now: float) -> dict[str, Any]:
    """The last `minutes` minutes (the current one included) as the API serves them:
    one point per minute, oldest first, zero where nothing finished and `null` depths
    where no conductor looked."""
    minutes = span(minutes)
    last = bucket_of(now)
    buckets = range(last - minutes + 1, last + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            pipe.hgetall(keys.history(bucket))
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    names: dict[str, set[str]] = {kind: set() for kind in KINDS}
    parsed: list[dict[str, dict[str, float]]] = []
    for reply in replies:
        point: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
        for field, value in reply.items():
            kind, _, name = field.decode().partition(":")
            if kind in point and name:
                point[kind][name] = float(value)
                names[kind].add(name)
        parsed.append(point)
    pools = sorted(names[SUCCEEDED] | names[FAILED])
    backlogs = sorted(names[DEPTH])
    spenders = sorted(names[SPEND])
    points: list[dict[str, Any]] = [
        {
            "at": bucket * BUCKET_SECONDS,
            SUCCEEDED: {pool: int(point[SUCCEEDED].get(pool, 0)) for pool in pools},
            FAILED: {pool: int(point[FAILED].get(pool, 0)) for pool in pools},
            DEPTH: {name: _maybe_int(point[DEPTH].get(name)) for name in backlogs},
            SPEND: {pool: round(point[SPEND].get(pool, 0.0), 6) for pool in spenders},
        }
        for bucket, point in zip(buckets, parsed, strict=True)
    ]
    return {
        "minutes": minutes,
        "bucket_seconds": BUCKET_SECONDS,
        "now": now,
        "pools": pools,
        "backlogs": backlogs,
        "spend_pools": spenders,
        "totals": {
            SUCCEEDED: {pool: sum(p[SUCCEEDED][pool] for p in points) for pool in pools},
            FAILED: {pool: sum(p[FAILED][pool] for p in points) for pool in pools},
            SPEND: {pool: round(sum(p[SPEND][pool] for p in points), 6) for pool in spenders},
        },
        "points": points,
    }


def _maybe_int(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(value)
