"""The pruner: settled batches leave Redis once their retention is over, archived first.

It runs in every conductor, and the holder of a lease of its own (`Keys.retention_lease`,
the scaler's `lua/lease.lua`) acts, so the service prunes once whatever its number of
conductors. Each look (`prune_interval`):

1. finishes removals a dead pruner left (`Keys.pruning`);
2. bounds the dead letters (`dead_letters`);
3. walks the batches a page at a time. A batch whose dispatch finished, with nothing
   running and its backlog not paused, whose jobs all ran to an end (a final receipt
   or a dead letter each) is *settled*: it gets `settled_at` and `expires_at` (settled
   plus `batch_retention`, or its own `dispatch --keep`) in its hash, which `status`
   shows. A batch that runs again (`dlq requeue`, `retry`) loses them.
4. A settled batch whose `expires_at` has passed is archived (`archive`, one gzip JSONL
   file), taken out of sight in one step (`lua/prune_batch.lua`, refused if anything
   changed since the archive was written) and deleted in bounded steps: HSCAN/HDEL a
   chunk at a time, then UNLINK — no single command blocks Redis for a big batch.
   One log line per batch pruned, `batch_pruned`, with its size.

A batch's dead letters are copied into its archive and stay on the dead-letter list
until handled or bounded away.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.durations import NEVER
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.receipts import receipt_status
from orchestrator.retention.archive import (
    CHUNK,
    FINAL,
    Written,
    archive_file,
    write_archive,
)
from orchestrator.retention.dead_letters import (
    bound_dead_letters,
    letter_job_id,
    letters_by_batch,
)
from orchestrator.scripts import script
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.retention")
LEASE_TTL_MS = 30_000  # renewed between every chunk of work
PAGE = 200  # batches read per round trip
# The keys of a batch, renamed to trash and deleted when it is pruned. `receipts` and
# `running` first: `lua/prune_batch.lua` checks them; the batch hash last.
PARTS = ("receipts", "running", "cancelled", "batch_ids", "batch")
_FIELDS = ("complete", "total", "backlog", "expires_at", "keep")


class LeaseLost(Exception):
    """Another conductor prunes now: this one stops where it is."""


@dataclass(frozen=True)
class Pruned:
    batch: str
    receipts: int
    dead_letters: int
    bytes: int  # Redis memory the batch's keys used (MEMORY USAGE, sampled)
    archive: Path
    archive_bytes: int
    seconds: float


class Pruner:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        conductor_id: str,
        metrics: Metrics | None = None,
        outage: RedisOutage | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.id = conductor_id
        self.metrics = metrics or Metrics()
        self.outage = outage or RedisOutage(log)
        self.keys = Keys(settings.namespace)
        self._lease = script(redis, "lease")
        self._prune = script(redis, "prune_batch")
        self.leading = False

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except (RedisError, OSError) as exc:
                    self.outage.failed(exc, during="pruner")
                except LeaseLost:
                    pass
                await anyio.sleep(self.settings.prune_interval)
        finally:
            if self.leading:
                with anyio.move_on_after(2, shield=True):
                    with suppress(RedisError, OSError):  # else it lapses by itself
                        await self._lease(keys=[self.keys.retention_lease], args=[self.id, 0])

    async def tick(self) -> list[Pruned]:
        """One look at everything, when this conductor holds the lease: what it pruned."""
        await self._renew()
        if not self.leading:
            return []
        for batch in await self.redis.smembers(self.keys.pruning):  # type: ignore[misc]
            await self._remove(batch.decode())
        await bound_dead_letters(
            self.redis, self.keys, self.settings.archive_path,
            retention=self.settings.dead_letter_retention, cap=self.settings.dead_letter_cap,
            between=self._renew,
        )  # fmt: skip
        letters: dict[str, list[bytes]] | None = None
        paused = {p.decode() for p in await self.redis.hkeys(self.keys.paused_backlogs)}  # type: ignore[misc]
        pruned: list[Pruned] = []
        start = receipt_bytes = 0
        while page := await self.redis.zrange(self.keys.batches, start, start + PAGE - 1):
            start += len(page)
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in page:
                    pipe.hmget(self.keys.batch(raw.decode()), list(_FIELDS))
                    pipe.hlen(self.keys.running(raw.decode()))
                    pipe.hlen(self.keys.receipts(raw.decode()))
                    pipe.memory_usage(self.keys.receipts(raw.decode()))  # sampled: cheap
                replies = await pipe.execute()
            for i, raw in enumerate(page):
                batch = raw.decode()
                fields = dict(zip(_FIELDS, replies[4 * i], strict=True))
                running, receipts = replies[4 * i + 1], replies[4 * i + 2]
                receipt_bytes += int(replies[4 * i + 3] or 0)
                complete, expires = fields["complete"] == b"1", fields["expires_at"]
                if running or fields["backlog"] is None or fields["backlog"].decode() in paused:
                    if expires is not None:  # it runs again: no longer settled
                        await self._unsettle(batch)
                    continue
                if not complete:
                    continue
                if letters is None:
                    letters = await letters_by_batch(self.redis, self.keys)
                own = letters.get(batch, [])
                if expires is None:
                    total = int(float(fields["total"] or 0))
                    if receipts + len(own) >= total and await self._settled(batch, total, own):
                        await self._settle(batch, fields["keep"])
                elif _time(expires) <= time.time():
                    done = await self._archive_and_prune(batch, own)
                    if done is not None:
                        start -= 1  # the page's members after it moved up by one
                        pruned.append(done)
                        receipt_bytes -= int(replies[4 * i + 3] or 0)
        await self._measure(receipt_bytes)
        return pruned

    async def _measure(self, receipt_bytes: int) -> None:
        """Redis memory by part of the namespace, for /metrics: what the look read
        anyway (receipts), and a few sampled MEMORY USAGE calls (queues, dead letters)."""
        backlogs = [b.decode() for b in await self.redis.smembers(self.keys.backlogs)]  # type: ignore[misc]
        queues = [self.keys.backlog(name) for name in {*backlogs, *self.settings.backlogs}]
        queues += [self.keys.ready, self.keys.deferred]
        queues += [pool.queue or self.keys.pool_queue(pool.name) for pool in self.settings.pools]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in [self.keys.dead, *queues]:
                pipe.memory_usage(key)
            dead, *sizes = await pipe.execute()
        self.metrics.redis_memory.labels("receipts").set(receipt_bytes)
        self.metrics.redis_memory.labels("dead_letters").set(int(dead or 0))
        self.metrics.redis_memory.labels("queues").set(sum(int(size or 0) for size in sizes))

    # --- settling ---------------------------------------------------------------------

    async def _settled(self, batch: str, total: int, letters: list[bytes]) -> bool:
        """Whether every job of the batch ran to an end: a receipt that says so, or a
        dead letter (whatever its receipt says, or with none: refused by a conductor)."""
        final, unsettled = 0, set()
        cursor = 0
        while True:
            cursor, found = await self.redis.hscan(self.keys.receipts(batch), cursor, count=CHUNK)
            for job_id, receipt in found.items():
                if receipt_status(receipt) in FINAL:
                    final += 1
                else:
                    unsettled.add(job_id.decode())
            await self._renew()
            if cursor == 0:
                break
        return final + await self._dead_not_final(batch, letters, unsettled) >= total

    async def _dead_not_final(self, batch: str, letters: list[bytes], unsettled: set[str]) -> int:
        """How many jobs a dead letter settles that no final receipt counts already."""
        ids = {job_id for letter in letters if (job_id := letter_job_id(letter))}
        counted = len(ids & unsettled)
        rest = sorted(ids - unsettled)
        if rest:
            found = await self.redis.hmget(self.keys.receipts(batch), rest)  # type: ignore[misc]
            counted += sum(1 for receipt in found if receipt is None)
        return counted

    async def _settle(self, batch: str, keep: bytes | None) -> None:
        now = time.time()
        retention = float(keep) if keep is not None else self.settings.batch_retention
        expires = "never" if retention == NEVER else f"{now + retention:.3f}"
        await self.redis.hset(  # type: ignore[misc]
            self.keys.batch(batch), mapping={"settled_at": f"{now:.3f}", "expires_at": expires}
        )

    async def _unsettle(self, batch: str) -> None:
        await self.redis.hdel(self.keys.batch(batch), "settled_at", "expires_at")  # type: ignore[misc]

    # --- pruning ----------------------------------------------------------------------

    async def _archive_and_prune(self, batch: str, letters: list[bytes]) -> Pruned | None:
        began = time.monotonic()
        keys = [self._part(batch, part) for part in PARTS]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key)
            usage = sum(int(used or 0) for used in await pipe.execute())
        target = archive_file(self.settings.archive_path, batch)
        try:
            written = await write_archive(
                self.redis, self.keys, batch, target, letters, between=self._renew
            )
        except LookupError:
            return None  # gone meanwhile (pruned by a peer, or deleted by hand)
        except OSError as exc:  # no archive, no removal: the batch stays in Redis
            log.error("archive_failed", batch=batch, archive=str(target), error=str(exc),
                      hint="archive_dir must be a writable, lasting directory")  # fmt: skip
            return None
        if not await self._still_settled(batch, written, letters):
            await self._unsettle(batch)
            log.info("prune_skipped", batch=batch, reason="runs again")
            return None
        trash = [self.keys.trash(batch, part) for part in PARTS]
        outcome = await self._prune(
            keys=[
                self.keys.batch(batch), self.keys.batches, self.keys.pruning,
                *(k for pair in zip(keys, trash, strict=True) for k in pair),
            ],
            args=[batch, written.receipts, time.time(), *PARTS],
        )  # fmt: skip
        if outcome != b"pruned":
            log.info("prune_skipped", batch=batch, reason=outcome.decode())
            return None
        await self._remove(batch)
        done = Pruned(
            batch, written.receipts, written.dead_letters, usage, target, written.size,
            time.monotonic() - began,
        )  # fmt: skip
        self.metrics.pruned(done.bytes)
        log.info(
            "batch_pruned", batch=batch, receipts=done.receipts, dead_letters=done.dead_letters,
            bytes=done.bytes, archive=str(target), archive_bytes=done.archive_bytes,
            seconds=round(done.seconds, 3),
        )  # fmt: skip
        return done

    async def _still_settled(self, batch: str, written: Written, letters: list[bytes]) -> bool:
        settled = written.final + await self._dead_not_final(batch, letters, written.unsettled)
        return settled >= written.total

    async def _remove(self, batch: str) -> None:
        """Delete a pruned batch's trash keys in bounded steps, then forget it."""
        for part in PARTS:
            key = self.keys.trash(batch, part)
            kind = (await self.redis.type(key)).decode()
            cursor = 0
            while kind in ("hash", "set"):
                if kind == "hash":
                    cursor, found = await self.redis.hscan(key, cursor, count=CHUNK)
                    if found:
                        await self.redis.hdel(key, *found)  # type: ignore[misc]
                else:
                    cursor, members = await self.redis.sscan(key, cursor, count=CHUNK)
                    if members:
                        await self.redis.srem(key, *members)  # type: ignore[misc]
                await self._renew()
                if cursor == 0:
                    break
            await self.redis.unlink(key)
        await self.redis.srem(self.keys.pruning, batch)  # type: ignore[misc]

    def _part(self, batch: str, part: str) -> str:
        return str(getattr(self.keys, part)(batch))

    async def _renew(self) -> None:
        """Take or renew the lease; LeaseLost when another conductor holds it now."""
        held = bool(
            await self._lease(keys=[self.keys.retention_lease], args=[self.id, LEASE_TTL_MS])
        )
        if held != self.leading:
            log.info("pruner_lead" if held else "pruner_lead_lost", conductor=self.id)
        was, self.leading = self.leading, held
        if was and not held:
            raise LeaseLost


def _time(raw: bytes) -> float:
    text = raw.decode()
    return NEVER if text == "never" else float(text)
