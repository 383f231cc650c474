"""Dispatch: queue a manifest's jobs on a backlog, all validated first, each exactly once.

Two passes keep both promises at constant memory. The first, in a worker thread,
validates every line and spools the encoded envelopes to an anonymous temporary file
(so what is queued is exactly what was validated, even if the manifest changes
meanwhile); nothing touches Redis until the whole manifest is known to be good. The
second streams the spool to Redis in chunks, each chunk one Lua script that skips ids
the batch already queued — so dispatching a manifest again, or finishing a dispatch
that a crash cut short, queues nothing twice.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import orjson
import structlog
from redis.asyncio import Redis

from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.manifest import read_manifest
from orchestrator.registry import TaskRegistry
from orchestrator.scripts import script

CHUNK = 1000  # jobs per script call: well under Lua's unpack() limit of ~8000 values
CHUNKS_PER_ROUND_TRIP = 16
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,149}$")

Progress = Callable[[str, int, int], None]  # (phase, done, total or 0 when unknown)
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DispatchResult:
    manifest: str
    batch: str
    backlog: str
    total: int  # jobs in the manifest
    queued: int  # jobs this call queued (0 when all were queued before)
    dry_run: bool = False

    @property
    def already_queued(self) -> int:
        return 0 if self.dry_run else self.total - self.queued


async def dispatch_manifest(
    redis: Redis,
    keys: Keys,
    path: Path,
    backlog: str,
    registry: TaskRegistry,
    *,
    batch: str | None = None,
    max_line_bytes: int = 1_048_576,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> DispatchResult:
    batch = batch or path.stem
    if not _BATCH_ID.match(batch):
        raise UserError(
            f"batch name {batch!r} (from the manifest's file name) may hold only letters, "
            "digits and _ . : -; rename the file or pass --batch NAME"
        )
    dispatched_at = time.time()
    with tempfile.TemporaryFile() as spool:
        total, digest, resolved = await anyio.to_thread.run_sync(
            _validate_and_spool,
            path,
            registry,
            batch,
            max_line_bytes,
            dispatched_at,
            spool,
            progress,
        )
        if dry_run:
            return DispatchResult(str(path), batch, backlog, total, 0, dry_run=True)
        await _claim(redis, keys, batch, backlog, resolved, total, digest, dispatched_at)
        queued = await _push(redis, keys, batch, backlog, spool, total, progress)
    finished = {"dispatched_at": time.time(), "complete": 1}
    await redis.hset(keys.batch(batch), mapping=finished)  # type: ignore[misc]  # redis-py stub
    log.info(
        "dispatched", manifest=str(path), batch=batch, backlog=backlog, total=total, queued=queued
    )
    return DispatchResult(str(path), batch, backlog, total, queued)


def _validate_and_spool(
    path: Path,
    registry: TaskRegistry,
    batch: str,
    max_line_bytes: int,
    dispatched_at: float,
    spool: IO[bytes],
    progress: Progress | None,
) -> tuple[int, str, str]:
    """Pass one: every line validated and its envelope spooled as `id\\nenvelope\\n`."""
    total = 0
    for line in read_manifest(path, registry, batch, max_line_bytes):
        envelope = dict(line.spec, id=line.job_id, batch=batch, dispatched_at=dispatched_at)
        spool.write(line.job_id.encode() + b"\n" + orjson.dumps(envelope) + b"\n")
        total += 1
        if progress and total % 50_000 == 0:
            progress("validating", total, 0)
    spool.flush()
    spool.seek(0)
    return total, _sha256(path), str(path.resolve())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def _claim(
    redis: Redis,
    keys: Keys,
    batch: str,
    backlog: str,
    manifest: str,
    total: int,
    digest: str,
    now: float,
) -> None:
    """Record the batch, refusing when its name already belongs to other work."""
    state, recorded_backlog, recorded_manifest = await script(redis, "claim_batch")(
        keys=[keys.batch(batch), keys.batches, keys.backlogs],
        args=[digest, manifest, backlog, total, now, batch],
    )
    if state == b"other_manifest":
        raise UserError(
            f"batch {batch!r} was already dispatched from a different manifest "
            f"({recorded_manifest.decode()}); pass --batch NAME to dispatch this one as new work"
        )
    if state == b"other_backlog":
        raise UserError(
            f"batch {batch!r} was dispatched to {recorded_backlog.decode()}, not {backlog}; "
            "dispatch it there again, or pass --batch NAME to queue it as new work"
        )


async def _push(
    redis: Redis,
    keys: Keys,
    batch: str,
    backlog: str,
    spool: IO[bytes],
    total: int,
    progress: Progress | None,
) -> int:
    """Pass two: stream the spool into the backlog, many chunks per round trip."""
    push = script(redis, "push_jobs")
    script_keys = [keys.batch_job_ids(batch), keys.backlog(backlog), keys.batch(batch)]
    queued = done = 0
    rounds = _rounds(spool)
    while True:
        chunks = await anyio.to_thread.run_sync(next, rounds, None)
        if chunks is None:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for ids, envelopes in chunks:
                # On a pipeline this only buffers the EVALSHA; the reply comes from execute().
                await push(keys=script_keys, args=[len(ids), *ids, *envelopes], client=pipe)
            results = await pipe.execute()
        queued += sum(int(r) for r in results)
        done += sum(len(ids) for ids, _ in chunks)
        if progress:
            progress("queueing", done, total)
    return queued


def _rounds(spool: IO[bytes]) -> Iterator[list[tuple[list[bytes], list[bytes]]]]:
    """The spool as lists of (ids, envelopes) chunks, one list per Redis round trip."""
    while True:
        chunks = []
        for _ in range(CHUNKS_PER_ROUND_TRIP):
            ids: list[bytes] = []
            envelopes: list[bytes] = []
            while len(ids) < CHUNK and (job_id := spool.readline()):
                ids.append(job_id[:-1])
                envelopes.append(spool.readline()[:-1])
            if not ids:
                break
            chunks.append((ids, envelopes))
        if not chunks:
            return
        yield chunks
