"""Dead letters, bounded: kept until handled, but never more than `dead_letter_cap` of
them, nor older than `dead_letter_retention` — the oldest archived first, never dropped.

The list grows at its tail (RPUSH), so its head holds the oldest letters: a step reads
a chunk off the head, archives the letters that are too old or too many into a file of
their own under `<archive_dir>/dead-letters/`, and only then removes exactly those
(`lua/trim_dead.lua`, which compares them byte for byte, so a letter `dlq requeue` took
meanwhile is not removed twice and none is removed unarchived). A crash between the
two leaves a letter in an archive and on the list: found twice, never lost.

Also here: the snapshot of which batch each letter belongs to, which the pruner needs to
tell whether a batch is settled and to archive its letters with it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.retention.archive import CHUNK, ArchiveFile
from orchestrator.scripts import script

log = structlog.get_logger("orchestrator.retention")

DIRECTORY = "dead-letters"


async def bound_dead_letters(
    redis: Redis,
    keys: Keys,
    archive_dir: Path,
    *,
    retention: float,
    cap: int,
    between: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Archive and remove the letters beyond the bounds, a chunk at a time; how many."""
    trim = script(redis, "trim_dead")
    removed = 0
    while True:
        length = await redis.llen(keys.dead)  # type: ignore[misc]
        head = await redis.lrange(keys.dead, 0, CHUNK - 1)  # type: ignore[misc]
        cutoff = time.time() - retention
        take = 0
        for letter in head:
            if _at(letter) >= cutoff:
                break
            take += 1
        take = max(take, min(length - cap, len(head)))
        if take <= 0:
            return removed
        letters = head[:take]
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{time.time_ns() % 10**9:09d}"
        target = archive_dir / DIRECTORY / f"{name}.jsonl.gz"
        try:
            await _archive(target, letters)
        except OSError as exc:  # no archive, no removal: the letters stay on the list
            log.error("archive_failed", archive=str(target), error=str(exc),
                      hint="archive_dir must be a writable, lasting directory")  # fmt: skip
            return removed
        # 0: the head changed meanwhile; the letters are archived and also still on
        # the list (or handled): read it again.
        removed += int(await trim(keys=[keys.dead], args=letters))
        if between is not None:
            await between()


async def _archive(target: Path, letters: list[bytes]) -> None:
    out = await anyio.to_thread.run_sync(ArchiveFile, target)
    try:
        lines = [b'{"kind":"dead_letter","letter":%b}\n' % letter for letter in letters]
        await anyio.to_thread.run_sync(out.write, lines)
        await anyio.to_thread.run_sync(out.commit)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(out.discard)
        raise


async def letters_by_batch(redis: Redis, keys: Keys) -> dict[str, list[bytes]]:
    """Every dead letter that names a batch, as the list holds it, by that batch."""
    found: dict[str, list[bytes]] = {}
    start = 0
    while letters := await redis.lrange(keys.dead, start, start + CHUNK - 1):  # type: ignore[misc]
        start += len(letters)
        for letter in letters:
            batch = letter_batch(letter)
            if batch is not None:
                found.setdefault(batch, []).append(letter)
    return found


def letter_batch(raw: bytes) -> str | None:
    """The batch a dead letter names (its envelope's or its receipt's), if any."""
    letter = _parsed(raw)
    for part in ("payload", "receipt"):
        holder = letter.get(part)
        if isinstance(holder, dict) and isinstance(holder.get("batch"), str):
            return str(holder["batch"])
    return None


def letter_job_id(raw: bytes) -> str | None:
    job_id = _parsed(raw).get("job_id")
    return job_id if isinstance(job_id, str) else None


def _at(raw: bytes) -> float:
    at = _parsed(raw).get("at")
    return float(at) if isinstance(at, int | float) else 0.0  # no time: the oldest


def _parsed(raw: bytes) -> dict[str, Any]:
    try:
        letter = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return letter if isinstance(letter, dict) else {}
