"""Jobs that wait, by where they wait: the dashboard's queues page (the first few of
each place) and the pending rows of a batch page (a batch's jobs, wherever they are).

A job that has not started has no record of its own: it is only an element of one of
the lists a job moves through (`conductor/rounds.py` names them) — a backlog's levels,
the ready list, the deferred set, a pool's waiting list, a task's no-worker list, or a
pool's arq queue. Reading them is bounded (`first` elements per place, `SCAN_LIMIT`
for a batch's), so a backlog of millions costs one page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.keys import Keys
from orchestrator.settings import Settings

SCAN_LIMIT = 20_000  # elements of one place a batch page reads to find its pending jobs


@dataclass(frozen=True, slots=True)
class Place:
    """One place jobs wait: `kind` (backlog, ready, deferred, waiting, no_worker, queue),
    `name` (the backlog, pool or task it belongs to), its Redis key(s), and whether
    it is a sorted set (scores: when due)."""

    kind: str
    name: str
    lists: tuple[str, ...]  # keys read in order (a backlog's levels, highest first)
    scored: bool = False
    arq: bool = False  # a pool's arq queue: members are arq ids, payloads elsewhere

    @property
    def label(self) -> str:
        return self.name if self.kind == "backlog" else f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Waiting:
    position: int
    job_id: str | None
    batch: str | None
    task: str | None
    priority: int | None
    due: float | None  # deferred: the unix time it is due again

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position, "id": self.job_id, "batch": self.batch,
            "task": self.task, "priority": self.priority, "due": self.due,
        }  # fmt: skip


async def places(redis: Redis, keys: Keys, settings: Settings) -> list[Place]:
    """Every place a job may wait now, in the order a job passes them."""
    known = {raw.decode() for raw in await redis.smembers(keys.backlogs)}  # type: ignore[misc]
    backlogs = list(dict.fromkeys([*settings.backlogs, *sorted(known)]))
    tasks = [raw.decode() for raw in await redis.zrange(keys.no_worker_tasks, 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for name in backlogs:
            pipe.zrange(keys.backlog_levels(name), 0, -1)
        levels = await pipe.execute()
    found: list[Place] = []
    for name, used in zip(backlogs, levels, strict=True):
        order = sorted({0, *(int(level) for level in used)}, reverse=True)
        found.append(Place("backlog", name, tuple(keys.backlog_level(name, lv) for lv in order)))
    found.append(Place("ready", "conductors", (keys.ready,)))
    found.append(Place("deferred", "conductors", (keys.deferred,), scored=True))
    found += [Place("no_worker", task, (keys.no_worker(task),)) for task in tasks]
    for pool in settings.ordered_pools:
        found.append(Place("waiting", pool.name, (keys.waiting(pool.name),)))
        queue = pool.queue or keys.pool_queue(pool.name)
        found.append(Place("queue", pool.name, (queue,), scored=True, arq=True))
    return found


async def first(
    redis: Redis, place: Place, count: int, *, batch: str | None = None
) -> tuple[int, list[Waiting]]:
    """How many jobs wait in `place`, and the first `count` of them (of `batch` only,
    when given: then up to `SCAN_LIMIT` elements are read to find them)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in place.lists:
            pipe.zcard(key) if place.scored else pipe.llen(key)
        sizes = [int(size) for size in await pipe.execute()]
    read = count if batch is None else SCAN_LIMIT
    found: list[Waiting] = []
    position = 0
    for key, size in zip(place.lists, sizes, strict=True):
        if position >= read or len(found) >= count:
            break
        stop = min(size, read - position)
        if place.scored:
            members = await redis.zrange(key, 0, stop - 1, withscores=True)
            raws, scores = [m for m, _ in members], [float(s) for _, s in members]
        else:
            raws = await redis.lrange(key, 0, stop - 1)  # type: ignore[misc]
            scores = [0.0] * len(raws)
        if place.arq:
            raws = await _arq_payloads(redis, raws)
        for raw, score in zip(raws, scores, strict=True):
            position += 1
            waiting = _parse(raw, position, score if place.kind == "deferred" else None)
            if batch is None or waiting.batch == batch:
                found.append(waiting)
                if len(found) >= count:
                    break
    return sum(sizes), found


async def _arq_payloads(redis: Redis, arq_ids: Sequence[bytes]) -> list[bytes | None]:
    if not arq_ids:
        return []
    prefix = arq_jobs.JOB_KEY_PREFIX.encode()
    payloads: list[bytes | None] = await redis.mget([prefix + arq_id for arq_id in arq_ids])
    return [
        orjson.dumps(envelope) if (envelope := arq_jobs.envelope_in(payload)) else None
        for payload in payloads
    ]


def _parse(raw: bytes | None, position: int, due_ms: float | None) -> Waiting:
    """An element as far as it reads: an envelope, a bare line (no id yet), or neither."""
    try:
        value = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return Waiting(position, None, None, None, None, None)
    meta = value.get("meta")
    priority = meta.get("priority") if isinstance(meta, dict) else None
    return Waiting(
        position,
        _text(value.get("id")),
        _text(value.get("batch")),
        _text(value.get("task")),
        priority if isinstance(priority, int) else None,
        None if due_ms is None else due_ms / 1000,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def of_batch(
    redis: Redis, keys: Keys, settings: Settings, batch: str, limit: int
) -> list[tuple[str, Waiting]]:
    """Up to `limit` jobs of `batch` that wait, each with the label of where: what a
    batch page lists as pending (its jobs that have no record yet)."""
    found: list[tuple[str, Waiting]] = []
    for place in await places(redis, keys, settings):
        if len(found) >= limit:
            break
        _, jobs = await first(redis, place, limit - len(found), batch=batch)
        found += [(place.label, job) for job in jobs]
    return found
