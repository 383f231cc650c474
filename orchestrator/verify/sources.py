"""Where `verify` reads a batch from: Redis while the batch is there, its archive once the
pruner removed it (`retention.archive`). Both hand over the same raw records — the
batch hash, dead letters, receipts as JSON bytes — so one pass makes the same report
and exit code from either."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import islice
from pathlib import Path
from typing import Protocol

import orjson
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.retention.archive import ArchivedBatch

CHUNK = 2000  # ids per SSCAN and per HMGET
DEAD_CHUNK = 1000  # dead letters per LRANGE


class BatchSource(Protocol):
    archive: Path | None  # the archive read, None when Redis

    async def record(self) -> dict[bytes, bytes]: ...

    def dead_letters(self) -> AsyncIterator[list[bytes]]: ...

    async def receipts(self, ids: list[str]) -> list[bytes | None]: ...

    def job_ids(self) -> AsyncIterator[list[str]]: ...


class RedisBatch:
    """A batch as Redis holds it now."""

    archive: Path | None = None

    def __init__(self, redis: Redis, keys: Keys, batch: str) -> None:
        self.redis, self.keys, self.batch = redis, keys, batch

    async def record(self) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = await self.redis.hgetall(self.keys.batch(self.batch))  # type: ignore[misc]
        return found

    async def dead_letters(self) -> AsyncIterator[list[bytes]]:
        start = 0
        while letters := await self.redis.lrange(  # type: ignore[misc]
            self.keys.dead, start, start + DEAD_CHUNK - 1
        ):
            start += len(letters)
            yield letters

    async def receipts(self, ids: list[str]) -> list[bytes | None]:
        if not ids:
            return []
        found: list[bytes | None] = await self.redis.hmget(self.keys.receipts(self.batch), ids)  # type: ignore[misc]
        return found

    async def job_ids(self) -> AsyncIterator[list[str]]:
        """The ids of an ad-hoc batch, as the conductor recorded them when it took them."""
        cursor = 0
        while True:
            cursor, members = await self.redis.sscan(
                self.keys.batch_ids(self.batch), cursor, count=CHUNK
            )
            yield sorted(member.decode() for member in members)
            if cursor == 0:
                return


class ArchivedSource:
    """A batch read back from its archive: its jobs are those with a receipt or a dead
    letter (a settled batch's every job has one or the other)."""

    def __init__(self, archived: ArchivedBatch, path: Path) -> None:
        self.archived = archived
        self.archive: Path | None = path

    async def record(self) -> dict[bytes, bytes]:
        return {k.encode(): str(v).encode() for k, v in self.archived.record.items()}

    async def dead_letters(self) -> AsyncIterator[list[bytes]]:
        yield [orjson.dumps(letter) for letter in self.archived.letters]

    async def receipts(self, ids: list[str]) -> list[bytes | None]:
        return [self.archived.receipts.get(job_id) for job_id in ids]

    async def job_ids(self) -> AsyncIterator[list[str]]:
        ids = set(self.archived.receipts)
        for letter in self.archived.letters:
            if isinstance(job_id := letter.get("job_id"), str):
                ids.add(job_id)
        ordered = iter(sorted(ids))
        while chunk := list(islice(ordered, CHUNK)):
            yield chunk
