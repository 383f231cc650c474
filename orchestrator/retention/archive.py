"""A batch's archive: one gzip JSONL file holding all Redis knew of it, written whole or
not at all.

Lines, each a JSON object with a `kind`: first `batch` (its manifest path, the dispatch
record — the batch hash — and when it was archived), then a `receipt` per job, a
`dead_letter` per dead letter naming the batch, a `cancelled` per envelope `retry
--cancelled` would put back, and last `end` with the counts, so a reader knows the file
is whole. Receipts are copied as Redis holds them, never decoded on the way.

The file is written to a temporary name beside its place and renamed there when
complete, so a reader (verify, an operator) never sees half an archive, and a pruner
that dies midway leaves no archive that looks whole. The writing runs in a worker
thread (`anyio.to_thread`), a chunk at a time: memory stays flat whatever the batch's
size. gzip at level 5: about a tenth of the bytes for a fraction of the pass's time.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.receipts import receipt_status

FORMAT = 1
SUFFIX = ".jsonl.gz"
CHUNK = 1000  # hash fields per HSCAN, list items per LRANGE
LEVEL = 5
FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})  # a job that runs no more


def archive_file(directory: Path, batch: str) -> Path:
    """Where batch `batch`'s archive is (batch names hold no `/`: see `keys.BATCH_NAME`)."""
    return directory / f"{batch}{SUFFIX}"


class ArchiveFile:
    """A gzip JSONL file under a temporary name until `commit` renames it into place.
    Its methods block: call them through `anyio.to_thread.run_sync`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        target.parent.mkdir(parents=True, exist_ok=True)
        # closed by `commit` or `discard`, across calls from the pass that writes it
        self._out: gzip.GzipFile | None = gzip.GzipFile(self.temporary, "wb", compresslevel=LEVEL)

    def write(self, lines: Iterable[bytes]) -> None:
        assert self._out is not None
        self._out.write(b"".join(lines))

    def commit(self) -> int:
        """Flush, sync and rename into place; the archive's size in bytes. An archive
        already there (a batch of the same name pruned before: a manifest dispatched
        again after its batch was pruned) is kept beside it, named by its time."""
        assert self._out is not None
        self._out.close()
        self._out = None
        with open(self.temporary, "rb") as written:
            os.fsync(written.fileno())
        if self.target.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.target.stat().st_mtime))
            stem = self.target.name.removesuffix(SUFFIX)
            os.replace(self.target, self.target.with_name(f"{stem}.{stamp}{SUFFIX}"))
        os.replace(self.temporary, self.target)
        return self.target.stat().st_size

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.temporary.unlink(missing_ok=True)


@dataclass
class Written:
    """What an archive pass found: the counts its `end` line holds, and whether every
    job of the batch had run to an end (a batch that is no longer settled is not
    pruned)."""

    path: Path
    receipts: int = 0
    final: int = 0  # jobs whose receipt says they run no more
    dead_letters: int = 0
    cancelled: int = 0
    size: int = 0
    total: int = 0
    unsettled: set[str] = field(default_factory=set)  # ids with a receipt not final


async def write_archive(
    redis: Redis,
    keys: Keys,
    batch: str,
    target: Path,
    letters: list[bytes],
    *,
    between: Any = None,
) -> Written:
    """Copy batch `batch` from Redis into the archive `target`; `letters`: its dead
    letters as the dead-letter list holds them. `between`, when given, is awaited
    between chunks (the pruner renews its lease there). Raises LookupError when Redis
    has no such batch."""
    record = await redis.hgetall(keys.batch(batch))  # type: ignore[misc]
    if not record:
        raise LookupError(batch)
    fields = {k.decode(): v.decode() for k, v in record.items()}
    out = await anyio.to_thread.run_sync(ArchiveFile, target)
    written = Written(target, total=int(float(fields.get("total") or 0)))
    try:
        header = {
            "kind": "batch", "format": FORMAT, "batch": batch, "manifest": fields.get("manifest"),
            "record": fields, "archived_at": time.time(),
        }  # fmt: skip
        await anyio.to_thread.run_sync(out.write, [orjson.dumps(header) + b"\n"])
        async for chunk in _hash_chunks(redis, keys.receipts(batch)):
            lines = []
            for job_id, receipt in chunk:
                lines.append(b'{"kind":"receipt","receipt":%b}\n' % receipt)
                if receipt_status(receipt) in FINAL:
                    written.final += 1
                else:
                    written.unsettled.add(job_id.decode())
            written.receipts += len(chunk)
            await anyio.to_thread.run_sync(out.write, lines)
            if between is not None:
                await between()
        lines = [b'{"kind":"dead_letter","letter":%b}\n' % letter for letter in letters]
        written.dead_letters = len(lines)
        async for chunk in _hash_chunks(redis, keys.cancelled(batch)):
            lines += [
                b'{"kind":"cancelled","job_id":%b,"envelope":%b}\n'
                % (orjson.dumps(job_id.decode()), envelope)
                for job_id, envelope in chunk
            ]
            written.cancelled += len(chunk)
        end = {
            "kind": "end", "receipts": written.receipts, "dead_letters": written.dead_letters,
            "cancelled": written.cancelled,
        }  # fmt: skip
        lines.append(orjson.dumps(end) + b"\n")
        await anyio.to_thread.run_sync(out.write, lines)
        written.size = await anyio.to_thread.run_sync(out.commit)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(out.discard)
        raise
    return written


async def _hash_chunks(redis: Redis, key: str) -> AsyncIterator[list[tuple[bytes, bytes]]]:
    cursor = 0
    while True:
        cursor, found = await redis.hscan(key, cursor, count=CHUNK)
        if found:
            yield list(found.items())
        if cursor == 0:
            return


@dataclass
class ArchivedBatch:
    """An archive read back whole: what `verify` needs of a batch that left Redis."""

    batch: str
    manifest: str | None
    record: dict[str, str]
    receipts: dict[str, bytes]  # job id → the receipt as Redis held it
    letters: list[dict[str, Any]]
    complete: bool  # the `end` line was there

    @classmethod
    def read(cls, path: Path) -> ArchivedBatch:
        """Blocking: call through `anyio.to_thread`. ValueError when it is no archive."""
        receipts: dict[str, bytes] = {}
        letters: list[dict[str, Any]] = []
        header: dict[str, Any] | None = None
        complete = False
        try:
            with gzip.open(path, "rb") as lines:
                for line in lines:
                    item = orjson.loads(line)
                    kind = item.get("kind")
                    if kind == "receipt":
                        receipt = item["receipt"]
                        receipts[receipt["job_id"]] = orjson.dumps(receipt)
                    elif kind == "dead_letter":
                        letters.append(item["letter"])
                    elif kind == "batch":
                        header = item
                    elif kind == "end":
                        complete = True
        except (OSError, EOFError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a readable batch archive: {exc}") from None
        if header is None:
            raise ValueError(f"{path} is not a batch archive: it has no batch line")
        return cls(
            header["batch"], header.get("manifest"), header.get("record") or {},
            receipts, letters, complete,
        )  # fmt: skip
