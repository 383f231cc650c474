"""A snapshot of the whole service, read by `orchestrator status` in one atomic round trip.

Everything comes from `lua/snapshot.lua`, so the numbers agree with each other (a job is
never counted both in a backlog and in flight), and times are Redis's clock, the one
the rate limits run on. The snapshot only reads: a lapsed worker is left for the
conductor to forget.

Counting a batch's receipts by status means reading every receipt. The script scans at
most `receipt_budget` of them per call and hands back a cursor for the rest, so a big
batch costs Redis a few milliseconds per refresh rather than one long stall. A
`StatusReader` resumes unfinished scans on its next call, scans the batches counted
longest ago first (none starves), and never reads a settled batch's receipts again. A
live view may therefore show the counts of big unsettled batches up to (their receipts
/ budget) refreshes old (`counts_exact` false); `read_exact` reads until all are current.

`--json` fields (`SCHEMA` is bumped when one changes meaning or goes away):

- `schema`, `namespace`, `time` (Redis clock, unix seconds), `dead_letters` (count).
- `backlogs[]`: `name`, `depth` (jobs waiting), `configured` (in settings, else only
  found in the set of backlogs dispatched to); in the order conductors consume them.
- `conductor`: `live[]` (`id`, `processing`: jobs taken and not yet forwarded),
  `processing` (their sum), `orphaned` (jobs held by conductors whose heartbeat
  lapsed: a live peer puts them back on ready), `ready`, `deferred` and `next_due_in`
  (seconds until the next deferred job is due, null when none).
- `pools[]`, in routing order: `name`, `order`, `queue` (arq queue key), `spill_after`,
  `max_in_flight`, `workers[]` (`id`, `host`, `pid`, `slots`, `running`, `version`,
  `heartbeat_age`), `slots` (sum over live workers), `running` (sum of what workers
  last reported: up to one heartbeat old), `capacity` (slots within max_in_flight),
  `in_flight` (forwarded, not finished), `queued` (the arq queue's length: arq keeps a
  job there until it ends, so running jobs count), `free` (capacity - in_flight, at
  least 0: intake.lua's rule), `waiting` (jobs pinned to this pool while it is full),
  `oldest_heartbeat_age` (seconds, null without workers).
- `rate_limits[]`: `name`, `rate` (tokens/s), `burst`, `tokens` (available now),
  `full_in` (seconds until the bucket is full again; beyond burst/rate it means
  deferred jobs have reserved tokens ahead).
- `batches[]`, newest first: `id`, `backlog`, `manifest`, `created_at`, `total`,
  `queued` (jobs put on the backlog), `dispatched` (dispatch finished), `receipts`
  (receipts written), `done` (succeeded), `failed` (failed for good), `retrying`,
  `pending` (queued - done - failed: waiting or running), `settled`, `counts_exact`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import orjson
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.scripts import script
from orchestrator.settings import Settings

SCHEMA = 1
RECEIPT_BUDGET = 5_000  # receipts scanned per call: ~15 ms of Redis time at most


@dataclass(frozen=True, slots=True)
class Backlog:
    name: str
    depth: int
    configured: bool


@dataclass(frozen=True, slots=True)
class LiveConductor:
    id: str
    processing: int


@dataclass(frozen=True, slots=True)
class ConductorSide:
    live: list[LiveConductor]
    processing: int
    orphaned: int
    ready: int
    deferred: int
    next_due_in: float | None


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    id: str
    host: str
    pid: int
    slots: int
    running: int
    version: str
    heartbeat_age: float


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    order: int
    queue: str
    spill_after: float
    max_in_flight: int | None
    workers: list[WorkerBeat]
    slots: int
    running: int
    capacity: int
    in_flight: int
    queued: int
    free: int
    waiting: int
    oldest_heartbeat_age: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    rate: float
    burst: int
    tokens: float
    full_in: float


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    backlog: str
    manifest: str
    created_at: float
    total: int
    queued: int
    dispatched: bool
    receipts: int
    done: int
    failed: int
    retrying: int
    pending: int
    settled: bool
    counts_exact: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    schema: int
    namespace: str
    time: float
    backlogs: list[Backlog]
    conductor: ConductorSide
    pools: list[Pool]
    rate_limits: list[Bucket]
    batches: list[Batch]
    dead_letters: int


def to_json(snapshot: Snapshot) -> bytes:
    return orjson.dumps(asdict(snapshot), option=orjson.OPT_INDENT_2)


@dataclass(slots=True)
class _Tally:
    """One batch's receipt counts across calls: the scan in progress and the last whole one."""

    cursor: str = "0"
    partial: Counter[str] = field(default_factory=Counter)
    last: Counter[str] | None = None
    completed: int = -1  # the read that last finished a whole scan
    settled: bool = False


class StatusReader:
    """Reads snapshots; keep one per view so that receipt counts carry over."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        batches: int = 10,
        receipt_budget: int = RECEIPT_BUDGET,
    ) -> None:
        self.settings = settings
        self.keys = keys = Keys(settings.namespace)
        self._script = script(redis, "snapshot")
        self._tallies: dict[str, _Tally] = {}
        self._reads = 0
        self._script_keys = [
            keys.backlogs, keys.conductors, keys.ready, keys.deferred, keys.dead, keys.batches,
        ]  # fmt: skip
        self._request: dict[str, Any] = {
            "backlog_prefix": _prefix(keys.backlog),
            "backlogs": settings.backlogs,
            "conductor_prefix": _prefix(keys.conductor),
            "processing_prefix": _prefix(keys.processing),
            "batch_prefix": _prefix(keys.batch),
            "receipts_prefix": _prefix(keys.receipts),
            "pools": [
                {
                    "name": pool.name,
                    "queue": pool.queue or keys.pool_queue(pool.name),
                    "inflight": keys.inflight(pool.name),
                    "workers": keys.workers(pool.name),
                    "worker_prefix": _prefix(partial(keys.worker, pool.name)),
                    "waiting": keys.waiting(pool.name),
                }
                for pool in settings.ordered_pools
            ],
            "buckets": [{"name": n, "key": keys.bucket(n)} for n in settings.rate_limits],
            "batches": batches,
            "budget": receipt_budget,
        }

    async def read(self, *, keep: frozenset[str] = frozenset()) -> Snapshot:
        """One round trip; receipt counts of big unsettled batches may lag (see above).

        `keep`: batches whose counts are current enough; they are not scanned this time.
        """
        self._reads += 1
        tallies = self._tallies
        request = {
            **self._request,
            "cursors": {b: t.cursor for b, t in tallies.items() if t.cursor != "0"},
            "skip": [b for b, t in tallies.items() if t.settled or b in keep],
            "order": sorted(tallies, key=lambda b: tallies[b].completed),
        }
        raw = await self._script(keys=self._script_keys, args=[orjson.dumps(request)])
        return self._build(orjson.loads(raw), keep)

    async def read_exact(self) -> Snapshot:
        """Read until every count shown was finished during this call (one read unless
        batches are big); a batch counted in an earlier read is kept, not rescanned."""
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
            Backlog(name, depth, name in configured) for name, depth in _list(reply["backlogs"])
        ]
        backlogs.sort(key=lambda b: (not b.configured, "" if b.configured else b.name))
        return Snapshot(
            schema=SCHEMA,
            namespace=self.settings.namespace,
            time=now,
            backlogs=backlogs,
            conductor=ConductorSide(
                live=[LiveConductor(id_, n) for id_, alive, n in sorted(conductors) if alive],
                processing=sum(n for _, alive, n in conductors if alive),
                orphaned=sum(n for _, alive, n in conductors if not alive),
                ready=reply["ready"],
                deferred=reply["deferred"],
                next_due_in=round(max(0.0, float(next_due) / 1000 - now), 3) if next_due else None,
            ),
            pools=[self._pool(raw, now) for raw in reply["pools"]],
            rate_limits=[self._bucket(name, tat, now) for name, tat in _list(reply["buckets"])],
            batches=self._batches(_list(reply["batches"]), keep),
            dead_letters=reply["dead"],
        )

    def _pool(self, raw: dict[str, Any], now: float) -> Pool:
        (config,) = (p for p in self.settings.pools if p.name == raw["name"])
        beats = sorted(
            (_pairs(beat) for beat in _list(raw["workers"])), key=lambda b: b.get("worker", "")
        )
        workers = [_worker(beat, now) for beat in beats]
        slots = sum(w.slots for w in workers)
        capacity = min(slots, config.max_in_flight) if config.max_in_flight else slots
        return Pool(
            name=config.name,
            order=config.order,
            queue=config.queue or self.keys.pool_queue(config.name),
            spill_after=config.spill_after,
            max_in_flight=config.max_in_flight,
            workers=workers,
            slots=slots,
            running=sum(w.running for w in workers),
            capacity=capacity,
            in_flight=raw["in_flight"],
            queued=raw["queued"],
            free=max(0, capacity - raw["in_flight"]),
            waiting=raw["waiting"],
            oldest_heartbeat_age=max((w.heartbeat_age for w in workers), default=None),
        )

    def _bucket(self, name: str, tat: str | bool, now: float) -> Bucket:
        """GCRA state as tokens: the bucket stores its theoretical arrival time (TAT), each
        token spent pushes it 1/rate ahead, so tokens = burst - (TAT - now)*rate, within
        [0, burst]; a job passes when at least one token is left."""
        limit = self.settings.rate_limits[name]
        ahead = max(0.0, float(tat) - now) if isinstance(tat, str) else 0.0
        tokens = min(float(limit.burst), max(0.0, limit.burst - ahead * limit.rate))
        return Bucket(name, limit.rate, limit.burst, round(tokens, 3), round(ahead, 3))

    def _batches(self, replies: list[dict[str, Any]], keep: frozenset[str]) -> list[Batch]:
        self._tallies = {r["id"]: self._tallies.get(r["id"], _Tally()) for r in replies}
        return [self._batch(r, self._tallies[r["id"]], r["id"] in keep) for r in replies]

    def _batch(self, raw: dict[str, Any], tally: _Tally, kept: bool) -> Batch:
        record = _pairs(raw["record"])
        exact = tally.settled or kept
        if "cursor" in raw:  # the script scanned (some of) its receipts this call
            tally.partial.update(raw["counts"])
            tally.cursor = raw["cursor"]
            if tally.cursor == "0":
                tally.last, tally.partial, exact = tally.partial, Counter(), True
                tally.completed = self._reads
        counts = tally.last if tally.last is not None else tally.partial
        total, queued = _int(record.get("total")), _int(record.get("queued"))
        done = counts["succeeded"]
        failed = counts["failed"] + counts["dead"]
        dispatched = record.get("complete") == "1"
        settled = dispatched and exact and done + failed >= total
        tally.settled = tally.settled or settled
        return Batch(
            id=raw["id"],
            backlog=record.get("backlog", ""),
            manifest=record.get("manifest", ""),
            created_at=float(record.get("created_at") or raw["score"]),
            total=total,
            queued=queued,
            dispatched=dispatched,
            receipts=raw["receipts"],
            done=done,
            failed=failed,
            retrying=counts["retrying"],
            pending=max(0, queued - done - failed),
            settled=settled,
            counts_exact=exact,
        )


def _worker(beat: dict[str, str], now: float) -> WorkerBeat:
    return WorkerBeat(
        id=beat.get("worker", "?"),
        host=beat.get("host", "?"),
        pid=_int(beat.get("pid")),
        slots=_int(beat.get("slots")),
        running=_int(beat.get("running")),
        version=beat.get("version", "?"),
        heartbeat_age=round(max(0.0, now - float(beat.get("time") or now)), 3),
    )


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


def _pairs(flat: Any) -> dict[str, str]:
    """An HGETALL reply (field, value, field, value…) as a dict."""
    items = _list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def _int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0
