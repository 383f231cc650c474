"""Cancel: take a batch's (or some jobs') work out of every place it waits, for good.

Correctness does not come from finding every copy. It comes from the mark, written
first: a batch's `cancelled_at`, or the job in the batch's `cancelled` hash. Every path
to a start passes a check of it in the same atomic step that moves the job on — the
conductor's forward (`lua/forward.lua`) and the worker's begin (`lua/begin.lua`) — so
once the mark is set no cancelled job starts anywhere, whatever is in flight.

The sweep that follows is what makes cancelling prompt and visible: each structure a
job can wait in is cleaned by one script, atomically, in the order jobs flow (a backlog
before the processing lists its jobs move to, the deferred set before the ready list
it empties into), each removed job getting its `cancelled` receipt there and then.
Jobs a worker has already claimed are left to it: it sees the mark before it starts.
With `running`, jobs already running are stopped too (`worker/stops.py`), and the call waits
until they have written their receipts.

Marks are keyed by batch and id, never by a bare id, so cancelling never touches a
later job that reuses an id (python-arq/arq#485), and an id nothing knows is refused.

It stays one module over 300 lines because the mark, the sweep in flow order and the
wait for running jobs are one operation whose order is its correctness.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.control.lookup import (
    envelope_ids,
    items,
    receipts_of,
    unknown_batch,
)
from orchestrator.dispatch.after import held_lists, release_if_cancelled
from orchestrator.errors import UserError
from orchestrator.keys import Keys, backlog_name
from orchestrator.receipts import receipt_status
from orchestrator.scripts import script
from orchestrator.settings import Settings

QUEUED_CHUNK = 200  # jobs per cancel_queued call
SWEEP_PASSES = 3  # sweeps of the conductor-side places, until one finds nothing
POLL = 0.05  # seconds between looks while waiting for workers
# Where a cancelled job was found, as `cancel` reports it.
PLACES = ("held", "backlog", "waiting", "no_worker", "deferred", "ready", "taken", "pool_queue")
FINAL = ("succeeded", "failed", "dead")
_QUEUED_ERROR = "cancelled before it started"


@dataclass(frozen=True, slots=True)
class Target:
    """What one cancel is about: whole batches, or single jobs (batch, id)."""

    batches: tuple[str, ...] = ()
    jobs: tuple[tuple[str, str], ...] = ()

    def matches(self, batch: Any, job_id: Any) -> bool:
        return batch in self.batches or (batch, job_id) in self.jobs

    def sweep_args(self, batch: str) -> list[str]:
        return [batch, *(part for pair in self.jobs for part in pair)]


@dataclass
class CancelReport:
    """What a cancel did; `removed` counts jobs by the place they were taken from."""

    batches: list[str]
    jobs: list[str]
    already: list[str] = field(default_factory=list)  # batches or jobs cancelled before
    finished: dict[str, str] = field(default_factory=dict)  # job id → its final status
    removed: Counter[str] = field(default_factory=Counter)
    claimed: int = 0  # claimed by a worker: ended by its check before starting
    on_the_way: int = 0  # found by no sweep: between two places, stopped at their next step
    stopped: int = 0  # running jobs stopped (with `running`)
    still_running: list[str] = field(default_factory=list)  # not stopped within the wait
    left_running: int = 0  # running jobs left to finish (without `running`)

    @property
    def cancelled(self) -> int:
        return self.removed.total() + self.claimed + self.on_the_way

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "jobs": self.jobs,
            "already_cancelled": self.already,
            "already_finished": self.finished,
            "cancelled": self.cancelled,
            "removed": {place: self.removed[place] for place in PLACES},
            "claimed": self.claimed,
            "on_the_way": self.on_the_way,
            "stopped": self.stopped,
            "still_running": self.still_running,
            "left_running": self.left_running,
        }


class Canceller:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)

    # --- what to cancel ---------------------------------------------------------------

    async def batches(self, names: Sequence[str], *, running: bool, wait: float) -> CancelReport:
        """Cancel whole batches; an unknown batch is refused before anything changes."""
        names = list(dict.fromkeys(names))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys.batch(name), "created_at")
            created = await pipe.execute()
        unknown = [name for name, at in zip(names, created, strict=True) if at is None]
        if unknown:
            raise await unknown_batch(self.redis, self.keys, unknown[0], "nothing was cancelled")
        now = time.time()
        report = CancelReport(batches=names, jobs=[])
        target = Target(batches=tuple(names))
        before = await self._marked(target)
        async with self.redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hsetnx(self.keys.batch(name), "cancelled_at", f"{now:.6f}")
            marked = await pipe.execute()
        report.already = [name for name, new in zip(names, marked, strict=True) if not new]
        await self._sweep(target, report, now)
        await release_if_cancelled(self.redis, self.keys, names)
        stops = dict.fromkeys(names, f"{now:.6f}") if running else {}
        await self._settle(target, report, stops, wait=wait)
        await self._count_on_the_way(target, report, before)
        return report

    async def jobs(self, ids: Sequence[str], *, running: bool, wait: float) -> CancelReport:
        """Cancel single jobs, found by id wherever they are; an id found nowhere (and
        with no receipt in any batch) is refused before anything changes."""
        ids = list(dict.fromkeys(ids))
        report = CancelReport(batches=[], jobs=ids)
        located = await self._locate(ids)
        finished = await receipts_of(self.redis, self.keys, [i for i in ids if i not in located])
        unknown = [i for i in ids if i not in located and i not in finished]
        if unknown:
            raise UserError(
                f"unknown job id {unknown[0]!r}: it is not queued or running, and no "
                "batch has a receipt for it; nothing was cancelled"
            )
        for job_id, (_, status) in finished.items():
            if status == "cancelled":
                report.already.append(job_id)
            else:
                report.finished[job_id] = status
        pairs = tuple((batch, job_id) for job_id, batch in located.items())
        now = time.time()
        target = Target(jobs=pairs)
        before = await self._marked(target)
        async with self.redis.pipeline(transaction=True) as pipe:
            for batch, job_id in pairs:
                # A placeholder until the job is found: whoever finds it stores its envelope.
                pipe.hsetnx(self.keys.cancelled(batch), job_id, "")
            await pipe.execute()
        if pairs:
            await self._sweep(target, report, now)
            stops = {f"{b} {j}": f"{now:.6f}" for b, j in pairs} if running else {}
            await self._settle(target, report, stops, wait=wait)
            await self._count_on_the_way(target, report, before)
        return report

    # --- the sweep --------------------------------------------------------------------

    async def _places(self) -> list[tuple[str, str, str]]:
        """(place, kind, key) of every list or set of envelopes, in the order jobs flow."""
        keys = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.backlogs)
            pipe.zrange(keys.no_worker_tasks, 0, -1)
            pipe.smembers(keys.conductors)
            known, parked, conductors = await pipe.execute()
        backlogs = list(
            dict.fromkeys(
                [*self.settings.backlogs, *sorted(backlog_name(b.decode()) for b in known)]
            )
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in backlogs:
                pipe.zrange(keys.backlog_levels(name), 0, -1)
            levels = await pipe.execute()
        places: list[tuple[str, str, str]] = []
        for name, used in zip(backlogs, levels, strict=True):
            for level in sorted({0, *(int(float(raw)) for raw in used)}, reverse=True):
                places.append(("backlog", "list", keys.backlog_level(name, level)))
        places += [("waiting", "list", keys.waiting(pool)) for pool in self.settings.pool_names]
        places += [("no_worker", "list", keys.no_worker(m.decode())) for m in parked]
        places += [("deferred", "zset", keys.deferred), ("ready", "list", keys.ready)]
        places += [("taken", "list", keys.processing(c.decode())) for c in sorted(conductors)]
        return places + [("held", "list", key) for key in await held_lists(self.redis, keys)]

    async def _sweep(self, target: Target, report: CancelReport, now: float) -> None:
        """Jobs do not flow one way: a conductor takes a job off a backlog into its
        processing list and may then park it (waiting, no_worker, deferred, ready) to take
        it back later. One pass in flow order can miss a job that moves behind it, so the
        conductor-side places are swept again until a pass finds nothing (the mark still
        stops a job missed; the passes make it prompt and counted)."""
        sweep = script(self.redis, "cancel_sweep")
        for _ in range(SWEEP_PASSES):
            found = 0
            for place, kind, key in await self._places():
                for batch in target.batches or ("",):
                    removed = int(
                        await sweep(
                            keys=[key],
                            args=[
                                kind,
                                self.keys.root,
                                now,
                                _QUEUED_ERROR,
                                *target.sweep_args(batch),
                            ],
                        )
                    )
                    report.removed[place] += removed
                    found += removed
            if not found:
                break
        for pool in self.settings.ordered_pools:
            queue = pool.queue or self.keys.pool_queue(pool.name)
            report.removed["pool_queue"] += await self._sweep_queue(pool.name, queue, target, now)

    async def _sweep_queue(self, pool: str, queue: str, target: Target, now: float) -> int:
        """A pool's arq queue holds ids; the envelopes are in arq's job keys, read here and
        removed by a script only if unchanged and unclaimed."""
        removed = 0
        cancel_queued = script(self.redis, "cancel_queued")
        async for chunk in arq_jobs.queued(self.redis, queue, QUEUED_CHUNK):
            script_keys = [queue, self.keys.inflight(pool), self.keys.events]
            args: list[Any] = [self.keys.root, now, _QUEUED_ERROR, pool]
            for job in chunk:
                envelope = job.envelope
                if not target.matches(envelope.get("batch"), envelope["id"]):
                    continue
                script_keys += job.take_keys
                args += [
                    job.arq_id, job.payload, envelope["id"], envelope["batch"],
                    envelope.get("task", ""), orjson.dumps(envelope),
                ]  # fmt: skip
            if len(args) > 4:
                outcomes = await cancel_queued(keys=script_keys, args=args)
                removed += sum(int(outcome) for outcome in outcomes)
        return removed

    # --- after the sweep --------------------------------------------------------------

    async def _settle(
        self, target: Target, report: CancelReport, stops: dict[str, str], *, wait: float
    ) -> None:
        """Wait (at most `wait` s) for the jobs workers hold to end: claimed ones are
        cancelled by their check at once; running ones are stopped when `stops` names
        them (`stop_running` fields), else left to finish. What is held is read before
        the stop is asked for, so that a stop is counted as one."""
        running = bool(stops)
        held = await self._held(target)
        if stops:
            await self.redis.hset(self.keys.stop_running, mapping=stops)  # type: ignore[misc]
            await self.redis.publish(self.keys.cancels, "cancel")

        def busy(job: tuple[str, str], status: str | None) -> bool:
            if held[job] == "running":  # running when the sweep ended
                return running and status == "running"
            return status in (None, "retrying")  # claimed: its check is a moment away

        deadline = time.monotonic() + wait
        statuses = dict(held)
        while any(busy(job, status) for job, status in statuses.items()):
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(POLL)
            statuses = await self._statuses(held)
        for job, status in statuses.items():
            if status == "cancelled":
                if held[job] == "running":
                    report.stopped += 1
                else:
                    report.claimed += 1
            elif status == "running" and running:
                report.still_running.append(job[1])
            elif status == "running":
                report.left_running += 1

    async def _marked(self, target: Target) -> int:
        """How many of the target's jobs hold a cancelled envelope (every path that cancels
        a job stores one): read before and after, the difference counts the jobs cancelled
        by this call, those that the conductor's own check ended on their way included."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch in target.batches:
                pipe.hlen(self.keys.cancelled(batch))
            for batch, job_id in target.jobs:
                pipe.hget(self.keys.cancelled(batch), job_id)
            replies = await pipe.execute()
        counts = replies[: len(target.batches)]
        values = replies[len(target.batches) :]
        return sum(int(n) for n in counts) + sum(1 for value in values if value)

    async def _count_on_the_way(self, target: Target, report: CancelReport, before: int) -> None:
        """Jobs no sweep found: those the conductor's check cancelled while the sweep ran,
        and those still between two places (neither ended nor running), which the mark
        stops at their next step — a job is never in no place, only between two."""
        ended = await self._marked(target) - before
        checked = max(0, ended - report.removed.total() - report.claimed - report.stopped)
        report.on_the_way = checked + await self._unended(target)

    async def _unended(self, target: Target) -> int:
        """The target's jobs with no receipt and no run in progress."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch in target.batches:
                pipe.hget(self.keys.batch(batch), "queued")
                pipe.hlen(self.keys.receipts(batch))
                pipe.hlen(self.keys.running(batch))
            for batch, job_id in target.jobs:
                pipe.hexists(self.keys.receipts(batch), job_id)
                pipe.hexists(self.keys.running(batch), job_id)
            replies = await pipe.execute()
        whole = replies[: 3 * len(target.batches)]
        single = replies[3 * len(target.batches) :]
        unended: int = sum(
            max(0, int(queued or 0) - int(receipts) - int(running))
            for queued, receipts, running in zip(whole[::3], whole[1::3], whole[2::3], strict=True)
        )
        return unended + sum(
            1 for receipt, running in zip(single[::2], single[1::2], strict=True)
            if not receipt and not running
        )  # fmt: skip

    async def _held(self, target: Target) -> dict[tuple[str, str], str | None]:
        """The target's jobs a worker holds now — running, or claimed and about to check
        — with their receipt's status: found by their arq in-progress claims."""
        held: dict[tuple[str, str], str | None] = {}
        for pool in self.settings.ordered_pools:
            queue = pool.queue or self.keys.pool_queue(pool.name)
            async for chunk in arq_jobs.queued(self.redis, queue, QUEUED_CHUNK):
                mine = [
                    job for job in chunk
                    if target.matches(job.envelope.get("batch"), job.envelope["id"])
                ]  # fmt: skip
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job in mine:
                        pipe.exists(arq_jobs.IN_PROGRESS_KEY_PREFIX + job.arq_id)
                    claimed = await pipe.execute()
                for job, is_claimed in zip(mine, claimed, strict=True):
                    if is_claimed:
                        held[(str(job.envelope["batch"]), job.envelope["id"])] = None
        statuses = await self._statuses(held)
        return {job: statuses[job] for job in held}

    async def _statuses(self, jobs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Each job's state: `running` while a run is in progress, else its receipt's
        status (None: none yet)."""
        jobs = list(jobs)
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch, job_id in jobs:
                pipe.hexists(self.keys.running(batch), job_id)
                pipe.hget(self.keys.receipts(batch), job_id)
            replies = await pipe.execute()
        return {
            job: "running" if replies[2 * index] else receipt_status(replies[2 * index + 1])
            for index, job in enumerate(jobs)
        }

    # --- finding single jobs ----------------------------------------------------------

    async def _locate(self, ids: Sequence[str]) -> dict[str, str]:
        """Job id → batch, for the ids queued or running somewhere now."""
        found: dict[str, str] = {}
        wanted = set(ids)
        payloads = await self.redis.mget(
            [arq_jobs.JOB_KEY_PREFIX + self.keys.arq_job_id(i) for i in ids]
        )
        for job_id, payload in zip(ids, payloads, strict=True):
            envelope = arq_jobs.envelope_in(payload)
            if envelope is not None and envelope.get("id") == job_id:
                found[job_id] = str(envelope["batch"])
        needles = [i.encode() for i in wanted - found.keys()]
        for _, kind, key in await self._places() if needles else ():
            for item in await items(self.redis, kind, key):
                if any(needle in item for needle in needles):
                    envelope = envelope_ids(item)
                    if envelope and envelope["id"] in wanted and envelope["id"] not in found:
                        found[envelope["id"]] = envelope["batch"]
        return found
