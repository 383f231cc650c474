"""A snapshot of the whole service, read by `orchestrator status` in one atomic round trip.

Everything comes from `lua/snapshot.lua`, so the numbers agree with each other (a job is
never counted both in a backlog and in flight), and times are Redis's clock, the one
the rate limits run on. The snapshot only reads: a lapsed worker is left for the
conductor to forget.

Counting a batch's jobs means reading every receipt, and the dead letters. The script
reads at most a budget of each per call and hands back where it stopped, so a big
batch costs Redis a few milliseconds per refresh rather than one long stall (see
`batches`). A `StatusReader` resumes unfinished reads on its next call, so a
live view may show the counts of big unsettled batches a few refreshes old
(`counts_exact` false); `read_exact` reads until all are current. The fields, as
`--json` prints them, are described in `model`.

A pool with a scaler also shows the scaler's last view of it and the day's spend
(`scaler`), read in the same round trip. The day is this host's UTC day, as the
scaler's is its host's: both are `scaling.launches.day` of the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.priority import level_separator
from orchestrator.scaling.launches import day
from orchestrator.scripts import script
from orchestrator.settings import Settings, redact_url
from orchestrator.status.batches import BatchCounter, as_int, as_time, hash_pairs
from orchestrator.status.model import (
    SCHEMA,
    Backlog,
    Batch,
    Bucket,
    ConductorSide,
    Level,
    LiveConductor,
    NoWorker,
    Pool,
    RedisInfo,
    Snapshot,
    WorkerBeat,
    to_json,
)
from orchestrator.status.scaler import read_scaler

if TYPE_CHECKING:
    from orchestrator.connection import RedisSource

__all__ = ["Batch", "Pool", "Snapshot", "StatusReader", "to_json"]

RECEIPT_BUDGET = 5_000  # receipts scanned per call: ~15 ms of Redis time at most
DEAD_BUDGET = 1_000  # dead letters read per call: ~8 ms (each also reads its receipt)


class StatusReader:
    """Reads snapshots; keep one per view so that receipt counts carry over.

    `batches` newest batches are listed, after passing over `first_batch` newer ones
    (a page of the dashboard's batch list).
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        batches: int = 10,
        first_batch: int = 0,
        receipt_budget: int = RECEIPT_BUDGET,
        dead_budget: int = DEAD_BUDGET,
        source: RedisSource | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys = Keys(settings.namespace)
        self.redis_info = (
            None
            if source is None
            else RedisInfo(redact_url(source.url), source.origin, source.detail)
        )
        self._script = script(redis, "snapshot")
        self._counter = BatchCounter()
        self._script_keys = [
            keys.backlogs, keys.conductors, keys.ready, keys.deferred, keys.dead, keys.batches,
            keys.no_worker_tasks, keys.paused_backlogs, keys.paused_pools,
        ]  # fmt: skip
        self._pools = [
            {
                "name": pool.name,
                "queue": pool.queue or keys.pool_queue(pool.name),
                "inflight": keys.inflight(pool.name),
                "workers": keys.workers(pool.name),
                "worker_prefix": _prefix(partial(keys.worker, pool.name)),
                "waiting": keys.waiting(pool.name),
                "scaler_state": keys.scaler_state(pool.name),
                "capacity": keys.capacity(pool.name),
            }
            for pool in settings.ordered_pools
        ]  # and the day's spend counter, per read
        self._request: dict[str, Any] = {
            "backlog_prefix": _prefix(keys.backlog),
            "levels_prefix": _prefix(keys.backlog_levels),
            "level_separator": level_separator(keys),
            "backlogs": settings.backlogs,
            "conductor_prefix": _prefix(keys.conductor),
            "processing_prefix": _prefix(keys.processing),
            "batch_prefix": _prefix(keys.batch),
            "receipts_prefix": _prefix(keys.receipts),
            "running_prefix": _prefix(keys.running),
            "no_worker_prefix": _prefix(keys.no_worker),
            "buckets": [{"name": n, "key": keys.bucket(n)} for n in settings.rate_limits],
            "batches": batches,
            "first_batch": first_batch,
            "budget": receipt_budget,
            "dead_budget": dead_budget,
        }

    async def read(self, *, keep: frozenset[str] = frozenset()) -> Snapshot:
        """One round trip; counts of big unsettled batches may lag (see above).

        `keep`: batches whose receipt counts are current enough; they are not scanned
        this time.
        """
        today = day(time.time())
        pools = [{**pool, "spend": self.keys.spend(pool["name"], today)} for pool in self._pools]
        request = {**self._request, **self._counter.request(keep), "pools": pools}
        raw = await self._script(keys=self._script_keys, args=[orjson.dumps(request)])
        return self._build(orjson.loads(raw), keep)

    async def read_exact(self) -> Snapshot:
        """Read until every count shown was finished during this call (one read unless
        batches are big); a batch counted in an earlier read is kept, not rescanned."""
        self._counter.restart_dead_pass()
        snapshot = await self.read()
        while not all(batch.counts_exact for batch in snapshot.batches):
            counted = frozenset(b.id for b in snapshot.batches if b.counts_exact)
            snapshot = await self.read(keep=counted)
        return snapshot

    def _build(self, reply: dict[str, Any], keep: frozenset[str]) -> Snapshot:
        now = float(reply["time"])
        conductors = [(id_, alive, n) for id_, alive, n in _list(reply["conductors"])]
        next_due = reply["next_due_ms"]
        configured = set(self.settings.backlogs)
        backlogs = [
            Backlog(
                name,
                depth,
                name in configured,
                sorted((Level(level, n) for level, n in _list(levels) if n), key=_highest),
                float(paused_at) if paused_at else None,
            )
            for name, depth, levels, paused_at in _list(reply["backlogs"])
        ]
        backlogs.sort(key=lambda b: (not b.configured, "" if b.configured else b.name))
        return Snapshot(
            schema=SCHEMA,
            namespace=self.settings.namespace,
            time=now,
            redis=self.redis_info,
            backlogs=backlogs,
            conductor=ConductorSide(
                live=[LiveConductor(id_, n) for id_, alive, n in sorted(conductors) if alive],
                processing=sum(n for _, alive, n in conductors if alive),
                orphaned=sum(n for _, alive, n in conductors if not alive),
                ready=reply["ready"],
                deferred=reply["deferred"],
                next_due_in=round(max(0.0, float(next_due) / 1000 - now), 3) if next_due else None,
            ),
            no_worker={
                task: NoWorker(jobs, round(float(since_ms) / 1000, 3))
                for task, jobs, since_ms in _list(reply["no_worker"])
                if jobs
            },
            pools=[self._pool(raw, now) for raw in reply["pools"]],
            rate_limits=[self._bucket(name, tat, now) for name, tat in _list(reply["buckets"])],
            batches=self._counter.batches(_list(reply["batches"]), reply["dead_scan"], keep),
            batches_total=reply["batch_total"],
            dead_letters=reply["dead"],
        )

    def _pool(self, raw: dict[str, Any], now: float) -> Pool:
        (config,) = (p for p in self.settings.pools if p.name == raw["name"])
        beats = sorted(
            (hash_pairs(beat) for beat in _list(raw["workers"])), key=lambda b: b.get("worker", "")
        )
        workers = [_worker(beat, now) for beat in beats]
        slots = sum(w.slots for w in workers)
        running = sum(w.running for w in workers)
        capacity = min(slots, config.max_in_flight) if config.max_in_flight else slots
        return Pool(
            name=config.name,
            order=config.order,
            queue=config.queue or self.keys.pool_queue(config.name),
            spill_after=config.spill_after,
            max_in_flight=config.max_in_flight,
            workers=workers,
            slots=slots,
            running=running,
            capacity=capacity,
            in_flight=raw["in_flight"],
            # arq keeps a job in its queue until it ends: running jobs are not queued.
            queued=max(0, raw["in_flight"] - running),
            free=max(0, capacity - raw["in_flight"]),
            prefetch=int(raw["prefetch"] or 0),
            finish_rate=float(raw["finish_rate"] or 0),
            waiting=raw["waiting"],
            oldest_heartbeat_age=max((w.heartbeat_age for w in workers), default=None),
            paused_at=float(raw["paused_at"]) if raw["paused_at"] else None,
            scaler=read_scaler(config.scaler, hash_pairs(raw["scaler"]), raw["spend"] or None),
        )

    def _bucket(self, name: str, tat: str | bool, now: float) -> Bucket:
        """GCRA state as tokens: the bucket stores its theoretical arrival time (TAT), each
        token spent pushes it 1/rate ahead, so tokens = burst - (TAT - now)*rate, within
        [0, burst]; a job passes when at least one token is left."""
        limit = self.settings.rate_limits[name]
        ahead = max(0.0, float(tat) - now) if isinstance(tat, str) else 0.0
        tokens = min(float(limit.burst), max(0.0, limit.burst - ahead * limit.rate))
        return Bucket(name, limit.rate, limit.burst, round(tokens, 3), round(ahead, 3))


def _worker(beat: dict[str, str], now: float) -> WorkerBeat:
    return WorkerBeat(
        id=beat.get("worker", "?"),
        host=beat.get("host", "?"),
        pid=as_int(beat.get("pid")),
        slots=as_int(beat.get("slots")),
        running=as_int(beat.get("running")),
        version=beat.get("version", "?"),
        heartbeat_age=round(max(0.0, now - float(beat.get("time") or now)), 3),
        launch=beat.get("launch") or None,
        idle_since=as_time(beat.get("idle_since")),
        draining=beat.get("draining") == "1",
    )


def _highest(level: Level) -> int:
    return -level.level


def _prefix(build: Callable[[str], str]) -> str:
    """The part of a per-id key before the id, which the script completes with ids it reads.

    Checked, so that a change of key layout in keys.py fails here rather than reading
    the wrong keys."""
    prefix = build("")
    if build("id") != prefix + "id":
        raise RuntimeError(f"key {build('id')!r} does not end in its id; update snapshot.lua")
    return prefix


def _list(value: Any) -> list[Any]:
    """cjson encodes an empty Lua table as `{}`: every list field may come back as one."""
    return value if isinstance(value, list) else []
