"""Verify: what became of every job of a manifest, told by its receipts and dead letters.

A *pass* streams the manifest (validated in a worker thread, a chunk at a time) and
fetches each chunk's receipts with one HMGET, so memory does not grow with the batch,
apart from one float per succeeded job for exact duration quantiles. HMGET by id rather
than HSCAN over the receipts hash: it visits jobs in manifest order, needs no map of
the whole batch to join the two, and never counts a receipt the manifest does not hold.

The batch record's `queued` cursor tells a job that is still on its way (pending) from
one that never left (missing): dispatch queues a batch in manifest order, so exactly
the first `queued` jobs were dispatched.

Each pass also sums, per pool, the worker time the batch's receipts took and what it
cost at the pool's price (`cost`).

It stays one module over 300 lines because the pass, its tally and the report it
fills are one idea whose parts only make sense together (the waiting is `wait`).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import orjson
from redis.asyncio import Redis

from orchestrator.errors import EXIT_JOBS_FAILED, EXIT_JOBS_PENDING, EXIT_OK, UserError
from orchestrator.keys import Keys
from orchestrator.manifest import ManifestLine, manifest_digest, read_manifest
from orchestrator.receipts import Receipt
from orchestrator.registry import TaskRegistry
from orchestrator.verify.cost import PoolUsage, Price
from orchestrator.verify.sources import BatchSource, RedisBatch

Outcome = Literal["done", "failed", "dead_lettered", "cancelled", "pending", "missing"]
OUTCOMES: tuple[Outcome, ...] = (
    "done", "failed", "dead_lettered", "cancelled", "pending", "missing",
)  # fmt: skip
# ids kept in the report
LISTED: tuple[Outcome, ...] = ("failed", "dead_lettered", "cancelled", "missing")
ID_LIMIT = 1000  # ids kept per listed outcome; the count is always exact
CHUNK = 2000  # manifest lines per HMGET
FINAL = ("succeeded", "failed", "dead")  # receipt statuses after which a job runs no more


def classify(position: int, receipt: Receipt | None, dead: bool, queued: int | None) -> Outcome:
    """What became of the job at 1-based `position` among the manifest's jobs.

    A success wins over a dead letter (the job was run again after it was given up on);
    otherwise a dead letter wins over a failed receipt, as the worker writes both at
    once. `queued` is None when the batch was never dispatched.
    """
    status = receipt["status"] if receipt is not None else None
    if status == "succeeded":
        return "done"
    if dead or status == "dead":
        return "dead_lettered"
    if status == "failed":
        return "failed"
    if status == "cancelled":
        return "cancelled"  # settled, but not by running: `orchestrator cancel`
    if queued is not None and position <= queued:
        return "pending"  # also a receipt saying "retrying": it will run again
    return "missing"


@dataclass(frozen=True)
class BatchRecord:
    """The part of the batch hash (written by dispatch) that verify relies on."""

    total: int
    queued: int
    complete: bool  # dispatch finished; until then more jobs may be queued
    sha256: str | None
    created_at: float | None
    dispatched_at: float | None

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> BatchRecord | None:
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        times = [float(fields[t]) if t in fields else None for t in ("created_at", "dispatched_at")]
        return cls(
            int(fields.get("total", 0)),
            int(fields.get("queued", 0)),
            fields.get("complete") == "1",
            fields.get("sha256"),
            *times,
        )


@dataclass
class Tally:
    """Outcomes of one task's jobs, with the durations of its successes and its retries."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    durations: array[float] = field(default_factory=lambda: array("d"))
    retries: int = 0  # attempts beyond the first, over jobs that ran to an end

    def add(self, outcome: Outcome, receipt: Receipt | None) -> None:
        self.outcomes[outcome] += 1
        if receipt is not None and receipt["status"] in FINAL:
            self.retries += max(0, receipt["attempt"] - 1)
            if receipt["status"] == "succeeded":
                self.durations.append(receipt["duration"])


@dataclass
class Report:
    manifest: Path | None  # None: an ad-hoc batch of bare lines, told by its ids alone
    batch: str
    record: BatchRecord | None
    totals: Counter[Outcome] = field(default_factory=Counter)
    tasks: dict[str, Tally] = field(default_factory=dict)
    pools: dict[str, Counter[str]] = field(default_factory=dict)  # pool → final status → jobs
    ids: dict[Outcome, list[str]] = field(default_factory=lambda: {o: [] for o in LISTED})
    usage: PoolUsage = field(default_factory=PoolUsage)  # worker time and cost per pool
    archive: Path | None = None  # read from this archive: the batch left Redis

    def add(self, job_id: str, task: str, outcome: Outcome, receipt: Receipt | None) -> None:
        self.totals[outcome] += 1
        self.tasks.setdefault(task, Tally()).add(outcome, receipt)
        if receipt is not None:
            self.usage.add(receipt)
            if receipt["status"] in FINAL:
                self.pools.setdefault(receipt["pool"], Counter())[receipt["status"]] += 1
        listed = self.ids.get(outcome)
        if listed is not None and len(listed) < ID_LIMIT:
            listed.append(job_id)

    @property
    def settled(self) -> bool:
        return self.totals["pending"] == self.totals["missing"] == 0

    @property
    def exit_code(self) -> int:
        totals = self.totals
        if not self.settled:
            return EXIT_JOBS_PENDING
        unsuccessful = totals["failed"] + totals["dead_lettered"] + totals["cancelled"]
        return EXIT_JOBS_FAILED if unsuccessful else EXIT_OK

    @property
    def may_change(self) -> bool:
        """Whether waiting can change the outcome, which is when `--wait` keeps waiting.

        Pending jobs are on their way. Missing jobs come only while the batch's dispatch
        is unfinished (running, or cut short and to be finished by dispatching again);
        with no batch record, or a finished dispatch, nothing will bring them.
        """
        totals = self.totals
        unfinished = self.record is not None and not self.record.complete
        return totals["pending"] > 0 or (totals["missing"] > 0 and unfinished)

    def to_json(self) -> dict[str, Any]:
        totals = self.totals
        everything = chain.from_iterable(tally.durations for tally in self.tasks.values())
        return {
            "manifest": None if self.manifest is None else str(self.manifest),
            "batch": self.batch,
            "verified_at": time.time(),
            "dispatch": None if self.record is None else vars(self.record),
            "archive": None if self.archive is None else str(self.archive),
            "settled": self.settled,
            "exit_code": self.exit_code,
            "totals": {**{o: totals[o] for o in OUTCOMES}, "total": totals.total()},
            "retries": sum(tally.retries for tally in self.tasks.values()),
            "durations": quantiles(everything),
            "tasks": {
                name: {
                    **{o: tally.outcomes[o] for o in OUTCOMES},
                    "total": tally.outcomes.total(),
                    "retries": tally.retries,
                    "durations": quantiles(tally.durations),
                }
                for name, tally in sorted(self.tasks.items())
            },
            "pools": {name: dict(sorted(c.items())) for name, c in sorted(self.pools.items())},
            "pool_usage": self.usage.to_json(),
            "jobs": {
                o: {"count": totals[o], "ids": ids, "truncated": totals[o] > len(ids)}
                for o, ids in self.ids.items()
            },
        }


def quantiles(durations: Iterable[float]) -> dict[str, float | int] | None:
    """Nearest-rank p50 and p95 and the max, in seconds; None when nothing succeeded."""
    ordered = sorted(durations)
    if not ordered:
        return None

    def rank(share: float) -> float:
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    return {"count": len(ordered), "p50": rank(0.5), "p95": rank(0.95), "max": ordered[-1]}


class Verifier:
    """Runs passes over one batch; `--wait` runs several.

    A dispatched batch is read in its manifest's order. An ad-hoc batch (bare manifest
    lines producers pushed, `manifest` None) has no manifest: its job ids are the set
    the conductor recorded as it took them, and each job's task comes from its receipt
    or dead letter. `prices`: the priced pools (`cost.pool_prices`), whose worker
    time the report also tells in money.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        manifest: Path | None,
        registry: TaskRegistry,
        *,
        batch: str | None = None,
        max_line_bytes: int = 1_048_576,
        prices: Mapping[str, Price] | None = None,
        source: BatchSource | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.manifest = manifest
        self.registry = registry
        if batch is None and manifest is None:
            raise ValueError("a batch without a manifest must be named")
        self.batch = batch or cast(Path, manifest).stem  # as dispatch names it
        # Redis, or the batch's archive once the pruner removed it from Redis
        self.source: BatchSource = source or RedisBatch(redis, keys, self.batch)
        self.max_line_bytes = max_line_bytes
        self.prices: Mapping[str, Price] = prices or {}
        self._digest_checked = False

    async def check(self) -> Report:
        record = BatchRecord.parse(await self.source.record())
        # Dead letters are read once, before the receipts: a job that fails for good
        # during the pass shows as failed, not dead-lettered, until the next pass (the
        # exit code is the same).
        dead = await self._dead_ids()
        report = Report(
            self.manifest, self.batch, record, usage=PoolUsage(self.prices),
            archive=self.source.archive,
        )  # fmt: skip
        if self.manifest is None:
            await self._check_ids(report, dead)
            return report
        queued = record.queued if record is not None else None
        # A generator: closing it when a pass ends early closes the manifest file at once.
        lines = cast(
            Generator[ManifestLine, None, None],
            read_manifest(self.manifest, self.registry, self.batch, self.max_line_bytes),
        )
        position = 0
        with closing(lines):
            while chunk := await anyio.to_thread.run_sync(_take, lines):
                ids = [line.job_id for line in chunk]
                found = await self.source.receipts(ids)
                for line, encoded in zip(chunk, found, strict=True):
                    position += 1
                    receipt = cast(Receipt, orjson.loads(encoded)) if encoded else None
                    outcome = classify(position, receipt, line.job_id in dead, queued)
                    report.add(line.job_id, line.spec["task"], outcome, receipt)
        if record is not None and record.sha256 and not self._digest_checked:
            await self._check_digest(record.sha256)
        return report

    async def _check_ids(self, report: Report, dead: dict[str, str]) -> None:
        """An ad-hoc batch: every id the conductor took is queued, so none is missing."""
        async for ids in self.source.job_ids():
            found = await self.source.receipts(ids)
            for job_id, encoded in zip(ids, found, strict=True):
                receipt = cast(Receipt, orjson.loads(encoded)) if encoded else None
                task = receipt["task"] if receipt else dead.get(job_id) or "(not run yet)"
                report.add(job_id, task, classify(1, receipt, job_id in dead, 1), receipt)

    async def _dead_ids(self) -> dict[str, str]:
        """Ids of this batch's dead letters, with their task where the letter tells it;
        letters naming no batch (a job lost in a pool) are kept too, as their id can only
        match a job of the manifest."""
        found: dict[str, str] = {}
        async for letters in self.source.dead_letters():
            for encoded in letters:
                try:
                    letter = orjson.loads(encoded)
                except orjson.JSONDecodeError:
                    continue
                job_id = letter.get("job_id") if isinstance(letter, dict) else None
                if isinstance(job_id, str) and _batch_of(letter) in (None, self.batch):
                    payload = letter.get("payload")
                    task = payload.get("task") if isinstance(payload, dict) else None
                    found[job_id] = task if isinstance(task, str) else ""
        return found

    async def _check_digest(self, recorded: str) -> None:
        assert self.manifest is not None  # only dispatched batches have a digest
        digest = await anyio.to_thread.run_sync(manifest_digest, self.manifest)
        if digest != recorded:
            raise UserError(
                f"the content of {self.manifest} is not what batch {self.batch!r} was "
                "dispatched from (it changed since, or the batch came from another file); "
                "pass --batch NAME to name the batch it was dispatched as"
            )
        self._digest_checked = True


async def write_report(manifest: Path, document: dict[str, Any]) -> Path:
    """Write `<manifest>.verify.json` beside the manifest, replacing it whole, so a reader
    never sees half a report."""
    target = manifest.with_name(manifest.name + ".verify.json")
    temporary = anyio.Path(target.with_name(f".{target.name}.tmp"))
    await temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    await temporary.replace(target)
    return target


def _take(lines: Iterator[ManifestLine]) -> list[ManifestLine]:
    return list(islice(lines, CHUNK))


def _batch_of(letter: dict[str, Any]) -> Any:
    for part in ("payload", "receipt"):
        if isinstance(holder := letter.get(part), dict) and "batch" in holder:
            return holder["batch"]
    return None
