"""Dispatch: queue a manifest's jobs on a backlog, all validated first, each exactly once.

Validation (a worker thread) and upload (the event loop) run side by side: each chunk
of validated envelopes is pushed to a private *staging* list while the next is being
validated, so Redis works on one core while Python validates on the other. Nothing
reaches the backlog until every line is known to be good; a bad line deletes the
staging list and the backlog never sees the batch. Only then is the staging list
committed onto the backlog by a Lua script, one slice at a time, behind the batch's
cursor (see `lua/commit_staged.lua`) — so dispatching a manifest again, or finishing a
dispatch a crash cut short, queues nothing twice. Memory stays constant: at most a few
chunks are in flight between the thread and the loop.

A batch is identified by its name and the SHA-256 of its manifest: the same name with
other content is refused rather than silently merged.

Each job goes onto the list of its priority level (see `priority`): all onto one list
when `--priority` gives the batch its level or no line has a `meta.priority` other than
0 — the plain push, as fast as ever — else the staged envelopes of such lines carry
their level (`<level>|<envelope>`) and the commit script sorts them onto their lists.
The cursor counts jobs in manifest order whatever their level, so it still makes a
second dispatch queue nothing twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.from_thread
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from orchestrator import tracing
from orchestrator.dispatch.after import check_after, hold
from orchestrator.errors import ServiceUnavailable, UserError, first_leaf
from orchestrator.eviction import FULL_HINT, is_oom
from orchestrator.job import EnvelopeEncoder, job_count, priority_of
from orchestrator.keys import BATCH_NAME, Keys
from orchestrator.manifest import manifest_digest, read_manifest
from orchestrator.registry import TaskRegistry
from orchestrator.scripts import script

CHUNK = 2000  # envelopes per RPUSH to the staging list
CHUNKS_IN_FLIGHT = 4  # between the validating thread and the uploading loop
COMMIT_SLICE = 20_000  # jobs moved per commit script call: bounded time inside Redis
STAGING_TTL = 3600  # seconds: a crashed dispatch's staging list expires on its own
_BATCH_RULE = (
    "a batch name is 1-150 letters, digits and _ . : - @, starting with a letter or digit "
    "(it is part of Redis keys and of job ids)"
)

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
    priority: int | None = None  # `--priority`: every job's level
    tasks: frozenset[str] = frozenset()  # the tasks its jobs name

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
    pools: Collection[str] | None = None,
    priority: int | None = None,
    keep: float | None = None,
    after: Sequence[str] = (),
    after_policy: str = "hold",
) -> DispatchResult:
    """Validate `path` and queue its jobs on `backlog` as batch `batch` (default: the
    file's stem). With `pools`, a `meta.pool` naming none of them is refused here. With
    `priority`, every job has that priority, whatever its line's `meta.priority`. With
    `keep` (seconds, infinity: never), the batch stays that long in Redis once settled,
    whatever `batch_retention` says (`retention.pruner`). With `after`, the batch is held
    until those batches settle (`dispatch/after.py`)."""
    if batch is not None and not BATCH_NAME.match(batch):
        raise UserError(f"--batch {batch!r}: {_BATCH_RULE}")
    batch = batch if batch is not None else path.stem
    if not BATCH_NAME.match(batch):
        raise UserError(
            f"batch name {batch!r} (the file name of {path}): {_BATCH_RULE}; "
            "rename the file or pass --batch NAME"
        )
    if after and not dry_run:
        await check_after(redis, keys, batch, after)
    dispatched_at = time.time()
    staging = keys.staging(batch, uuid.uuid4().hex)
    send, receive = anyio.create_memory_object_stream[list[bytes]](CHUNKS_IN_FLIGHT)
    total = 0
    try:
        try:
            async with anyio.create_task_group() as tasks:
                if dry_run:
                    tasks.start_soon(_discard, receive)
                else:
                    tasks.start_soon(_stage, redis, staging, receive)
                total, digest, resolved, levels, named = await anyio.to_thread.run_sync(
                    _validate,
                    path,
                    registry,
                    batch,
                    max_line_bytes,
                    pools,
                    dispatched_at,
                    priority,
                    send,
                    progress,
                )
        except BaseExceptionGroup as group:
            # The error that started it: a bad line, or Redis going away mid-upload.
            raise first_leaf(group) from None
        if dry_run:
            return DispatchResult(str(path), batch, backlog, total, 0, True, priority, named)
        await _claim(redis, keys, batch, backlog, path, resolved, total, digest, dispatched_at)
        if tracing.enabled and (carrier := tracing.current_carrier()):
            # the dispatch's span (commands/dispatch.py): the parent of its jobs' routing
            await redis.hset(keys.batch(batch), mapping=carrier)  # type: ignore[misc]
        # --priority N: every job on level N's list; else each on its own level's.
        targets = [priority or 0] if priority is not None or not levels else [0, *levels]
        queued = await _commit(
            redis, keys, batch, backlog, staging, total, progress, targets, held=bool(after)
        )
        if after:
            await hold(redis, keys, batch, after, after_policy)
        finished: dict[str, str | float] = {"dispatched_at": time.time(), "complete": 1}
        if keep is not None:
            finished["keep"] = repr(keep)  # "inf" for never: float() reads it back
        await redis.hset(keys.batch(batch), mapping=finished)  # type: ignore[misc]  # redis-py stub
    except ResponseError as exc:
        if not is_oom(exc):
            raise
        with anyio.CancelScope(shield=True):
            raise await _full(redis, keys, batch, total) from None
    finally:
        if not dry_run:
            with anyio.CancelScope(shield=True):
                await redis.delete(staging)
    log.info(
        "dispatched", manifest=str(path), batch=batch, backlog=backlog, total=total,
        queued=queued, priority=priority,
    )  # fmt: skip
    return DispatchResult(str(path), batch, backlog, total, queued, False, priority, named)


async def _full(redis: Redis, keys: Keys, batch: str, total: int) -> UserError:
    """Redis refused a write for want of memory: what was queued, and what to do. The
    staging list takes the memory before anything reaches a backlog, and each commit
    slice is one script (refused whole at its first write), so most often nothing was."""
    queued = int(await redis.hget(keys.batch(batch), "queued") or 0)  # type: ignore[misc]
    done = (
        "nothing was queued"
        if queued == 0
        else f"{queued} of {job_count(total)} were queued; dispatch again once it has room "
        "to queue the rest"
    )
    return ServiceUnavailable(
        f"batch {batch!r}: Redis is full (maxmemory reached, it refuses writes): {done}; "
        f"{FULL_HINT}"
    )


def _validate(
    path: Path,
    registry: TaskRegistry,
    batch: str,
    max_line_bytes: int,
    pools: Collection[str] | None,
    dispatched_at: float,
    priority: int | None,
    send: MemoryObjectSendStream[list[bytes]],
    progress: Progress | None,
) -> tuple[int, str, str, list[int], frozenset[str]]:
    """In a worker thread: validate every line, handing envelopes over chunk by chunk.
    Returns the count, the digest, the resolved path, the levels other than 0 that
    lines gave themselves (their staged envelopes are marked `<level>|`; none when
    `priority` gives every job its level) and the tasks the lines name.

    Closing `send` (also on error) tells the uploader that no more chunks come.
    """
    total = 0
    levels: set[int] = set()
    tasks: set[str] = set()
    encoder = EnvelopeEncoder(batch, dispatched_at, priority)
    try:
        chunk: list[bytes] = []
        for line in read_manifest(path, registry, batch, max_line_bytes, pools=pools):
            envelope = encoder.encode(line.raw, line.job_id, line.derived_id)
            tasks.add(line.spec["task"])
            if priority is None and "meta" in line.spec and (level := priority_of(line.spec)):
                envelope = b"%d|%b" % (level, envelope)
                levels.add(level)
            chunk.append(envelope)
            if len(chunk) == CHUNK:
                anyio.from_thread.run(send.send, chunk)
                chunk = []
                total += CHUNK
                if progress and total % 50_000 == 0:
                    progress("validating", total, 0)
        if chunk:
            anyio.from_thread.run(send.send, chunk)
            total += len(chunk)
    finally:
        anyio.from_thread.run_sync(send.close)  # streams are not thread-safe: close on the loop
    return total, manifest_digest(path), str(path.resolve()), sorted(levels), frozenset(tasks)


async def _stage(
    redis: Redis, staging: str, receive: MemoryObjectReceiveStream[list[bytes]]
) -> None:
    async with receive:
        async for chunk in receive:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.rpush(staging, *chunk)
                pipe.expire(staging, STAGING_TTL)
                await pipe.execute()


async def _discard(receive: MemoryObjectReceiveStream[list[bytes]]) -> None:
    async with receive:
        async for _ in receive:
            pass


async def _claim(
    redis: Redis,
    keys: Keys,
    batch: str,
    backlog: str,
    path: Path,
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
    if state == b"other_manifest" and recorded_manifest.decode() == manifest:
        # The same file with new content: most often a plan rewritten under a name
        # that a cleaned manifests/ handed out again.
        raise UserError(
            f"the content of {path} changed since batch {batch!r} was dispatched from it; "
            "pass --batch NAME to dispatch it as a new batch"
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


async def _commit(
    redis: Redis,
    keys: Keys,
    batch: str,
    backlog: str,
    staging: str,
    total: int,
    progress: Progress | None,
    levels: list[int],
    *,
    held: bool = False,
) -> int:
    """Move the staging list onto the backlog behind the batch's cursor: all onto the
    list of the one level given, or each job onto its own level's (the first given is 0).
    A `held` batch's jobs go onto its own held lists instead, levels kept."""
    commit = script(redis, "commit_staged")
    if held:
        script_keys = [
            staging, keys.batch(batch), keys.held_levels(batch), keys.doorbell,
            *(keys.held(batch, level) for level in levels),
        ]  # fmt: skip
    else:
        script_keys = [
            staging, keys.batch(batch), keys.backlog_levels(backlog), keys.doorbell,
            *(keys.backlog_level(backlog, level) for level in levels),
        ]  # fmt: skip
    mode = "one" if len(levels) == 1 else "marked"
    moved = queued = 0
    while moved < total:
        taken, pushed = await commit(keys=script_keys, args=[moved, COMMIT_SLICE, mode, *levels])
        if taken == 0:
            raise UserError(
                f"batch {batch!r}: the staging list vanished after {moved} of "
                f"{job_count(total)} "
                "(expired or deleted); dispatch the manifest again to finish"
            )
        moved += int(taken)
        queued += int(pushed)
        if progress:
            progress("queueing", moved, total)
    return queued
