"""The dashboard's history: per-minute buckets, written where the counters are written,
that expire — so days of running hold at most a day of minutes in Redis."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio

from orchestrator import history
from orchestrator.keys import Keys
from orchestrator.receipts import Receipt, stage


def _receipt(pool: str, status: Any, ended_at: float) -> Receipt:
    return Receipt(
        job_id=f"j{ended_at}", batch="b", task="system.echo", status=status, pool=pool,
        worker="w", attempt=1, started_at=ended_at - 1, ended_at=ended_at, duration=1.0,
        error=None,
    )  # fmt: skip


async def _history_keys(client: redis.asyncio.Redis, keys: Keys) -> list[bytes]:
    return [key async for key in client.scan_iter(match=keys.history(0)[:-1] + "*", count=1000)]


async def test_three_days_of_minutes_leave_at_most_a_day_of_buckets(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """Every write sets its bucket to expire a day after its minute: after writing every
    minute of three days (outcomes, depths, spend), Redis holds a day of buckets, each
    with a TTL of a day at most."""
    now = time.time()
    start = now - 3 * 86_400
    for minute in range(3 * 24 * 60 + 1):
        at = start + minute * 60
        async with async_redis.pipeline(transaction=True) as pipe:
            stage(pipe, keys, _receipt("metal", "succeeded", at), finished=True)
            stage(pipe, keys, _receipt("cloud", "failed", at), finished=True)
            history.stage_spend(pipe, keys, "cloud", 0.001, at)
            await pipe.execute()
        await history.note_depths(async_redis, keys, {"backlog:a": minute, "backlog:b": 1}, at)
    found = await _history_keys(async_redis, keys)
    assert history.MAX_MINUTES <= len(found) <= history.MAX_BUCKETS
    async with async_redis.pipeline(transaction=False) as pipe:
        for key in found:
            pipe.ttl(key)
            pipe.hlen(key)
        replies = await pipe.execute()
    ttls, sizes = replies[::2], replies[1::2]
    # -2: the oldest bucket expired since it was listed (a slow run); never -1 (no TTL)
    assert all(
        ttl == -2 or 0 < ttl <= history.KEEP_SECONDS + history.BUCKET_SECONDS for ttl in ttls
    )
    assert max(sizes) == 5  # succeeded:metal, failed:cloud, spend:cloud, two depths


async def test_the_history_reads_back_minute_by_minute(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """Outcomes per pool, the last depth of each minute, spend; empty minutes are zero
    (depths unknown: null); a retry or a cancel is not an outcome."""
    now = time.time() // 60 * 60 + 30  # half a minute in: now - 120 is two buckets back
    async with async_redis.pipeline(transaction=True) as pipe:
        for status in ("succeeded", "succeeded", "failed"):
            stage(pipe, keys, _receipt("metal", status, now - 120), finished=True)
        stage(pipe, keys, _receipt("metal", "retrying", now - 120), finished=False)
        stage(pipe, keys, _receipt("metal", "cancelled", now - 120), finished=True)
        stage(pipe, keys, _receipt("cloud", "succeeded", now), finished=True)
        history.stage_spend(pipe, keys, "cloud", 0.25, now)
        await pipe.execute()
    await history.note_depths(async_redis, keys, {"backlog:a": 7}, now - 110)
    await history.note_depths(async_redis, keys, {"backlog:a": 4}, now - 100)
    read = await history.read(async_redis, keys, 5, now)
    assert read["minutes"] == 5
    assert read["pools"] == ["cloud", "metal"]
    points = read["points"]
    assert len(points) == 5
    assert [p["at"] for p in points] == [
        (history.bucket_of(now) - 4 + i) * history.BUCKET_SECONDS for i in range(5)
    ]
    two_ago = points[-3]
    assert two_ago["succeeded"] == {"cloud": 0, "metal": 2}
    assert two_ago["failed"] == {"cloud": 0, "metal": 1}
    assert points[-1]["succeeded"] == {"cloud": 1, "metal": 0}
    assert points[-1]["spend"] == {"cloud": 0.25}
    assert read["totals"]["succeeded"] == {"cloud": 1, "metal": 2}
    assert read["totals"]["failed"] == {"cloud": 0, "metal": 1}
    depths = [p["depth"]["backlog:a"] for p in points]
    assert depths == [None, None, 4, None, None]  # the minute's last sample


def test_a_reader_asks_for_a_day_at_most() -> None:
    """An hour when not said; a day at most; a minute at least."""
    assert history.span(None) == 60
    assert history.span(10**6) == 24 * 60
    assert history.span(0) == 1
