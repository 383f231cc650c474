"""Dead letters, bounded: beyond `dead_letter_retention` or `dead_letter_cap` the oldest are
archived to a file of their own, then removed; none is ever removed unarchived."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import anyio
import orjson
import redis
import redis.asyncio

from orchestrator.keys import Keys
from orchestrator.retention.dead_letters import bound_dead_letters
from orchestrator.scripts import script


def letter(n: int, at: float) -> bytes:
    payload = {"id": f"j{n}", "batch": "b", "task": "system.echo"}
    return orjson.dumps(
        {"job_id": f"j{n}", "reason": "failed", "error": "x", "at": at, "payload": payload}
    )


def archived(directory: Path) -> list[str]:
    found = []
    for path in sorted((directory / "dead-letters").glob("*.jsonl.gz")):
        with gzip.open(path, "rb") as lines:
            found += [orjson.loads(line)["letter"]["job_id"] for line in lines]
    return found


def bound(url: str, keys: Keys, directory: Path, retention: float, cap: int) -> int:
    async def run() -> int:
        async with redis.asyncio.Redis.from_url(url) as client:
            return await bound_dead_letters(client, keys, directory, retention=retention, cap=cap)

    return anyio.run(run)


def test_letters_older_than_the_retention_are_archived_then_removed(
    sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """The old head goes to the archive, then off the list; the recent ones stay."""
    now = time.time()
    sync_redis.rpush(keys.dead, *[letter(n, now - 7200) for n in range(3)])
    sync_redis.rpush(keys.dead, *[letter(n, now) for n in range(3, 5)])
    assert bound(redis_url, keys, tmp_path, 3600, 1000) == 3
    assert archived(tmp_path) == ["j0", "j1", "j2"]
    assert [orjson.loads(x)["job_id"] for x in sync_redis.lrange(keys.dead, 0, -1)] == ["j3", "j4"]
    assert not list((tmp_path / "dead-letters").glob(".*"))


def test_a_list_over_its_cap_loses_its_oldest_letters_to_the_archive(
    sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Cap 1500, 2600 recent letters: the oldest 1100 archived (in chunks), in order."""
    now = time.time()
    sync_redis.rpush(keys.dead, *[letter(n, now) for n in range(2600)])
    assert bound(redis_url, keys, tmp_path, 3600, 1500) == 1100
    assert archived(tmp_path) == [f"j{n}" for n in range(1100)]
    assert sync_redis.llen(keys.dead) == 1500
    assert orjson.loads(sync_redis.lindex(keys.dead, 0))["job_id"] == "j1100"


def test_the_trim_removes_nothing_when_the_head_changed_meanwhile(
    sync_redis: redis.Redis, redis_url: str, keys: Keys
) -> None:
    """A letter requeued between the archive and the trim: nothing removed, nothing lost."""
    sync_redis.rpush(keys.dead, letter(1, 0), letter(2, 0))

    async def trim() -> int:
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            return int(await script(client, "trim_dead")(keys=[keys.dead], args=[letter(9, 0)]))

    assert anyio.run(trim) == 0
    assert sync_redis.llen(keys.dead) == 2
