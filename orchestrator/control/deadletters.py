"""Dead letters: reading, requeueing and purging the jobs that will not run again by
themselves.

Workers, the conductor and its reaper keep appending to the dead-letter list
(`Keys.dead`) while an operator works on it here, and another operator may be at it
too; so nothing here trusts a position in the list. A record is removed by its exact
bytes (LREM), which succeeds for whoever gets there first, and a requeue is one Lua
script (`lua/requeue_dead.lua`) that removes the record, clears arq's keys for the job,
marks its receipt `retrying` and puts its envelope on the ready list together — or
does none of it.

A record is named by its job id; one whose payload could not be parsed has no job id
and is named `@` and the first hex digits of its bytes' SHA-256 instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.announced import announced_tasks, runs
from orchestrator.job import JOB, requeued
from orchestrator.keys import Keys
from orchestrator.receipts import ATTEMPTS_KEPT, ATTEMPTS_TTL, DeadLetter
from orchestrator.scripts import script

HANDLE_PREFIX = "@"
REQUEUE_CHUNK = 100  # jobs per requeue script: each call holds the server only briefly
REMOVE_CHUNK = 1000  # LREMs per pipeline

Outcome = Literal["requeued", "gone", "live", "refused"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as found in the list: its exact bytes (what removing it matches on)
    and its fields."""

    raw: bytes
    record: DeadLetter

    @property
    def ref(self) -> str:
        """How a user names it: its job id, or a digest of its bytes when it has none."""
        job_id = self.record["job_id"]
        if job_id is not None:
            return job_id
        return HANDLE_PREFIX + hashlib.sha256(self.raw).hexdigest()[:8]

    @property
    def batch(self) -> str | None:
        """The batch the record names, in its envelope or its receipt."""
        for holder in (self.record.get("payload"), self.record.get("receipt")):
            if isinstance(holder, dict) and isinstance(holder.get("batch"), str):
                return str(holder["batch"])
        return None


@dataclass(frozen=True, slots=True)
class Requeued:
    """What became of one requeue request; `detail` is the task, or why not."""

    ref: str
    outcome: Outcome
    detail: str


async def read_all(redis: Redis, keys: Keys) -> list[Entry]:
    """Every record, oldest first, from one LRANGE: a consistent snapshot to select from
    (paging through a list others remove from could skip records)."""
    raws: list[bytes] = await redis.lrange(keys.dead, 0, -1)  # type: ignore[misc]
    return [parse(raw) for raw in raws]


async def read_newest(redis: Redis, keys: Keys, limit: int) -> tuple[int, list[Entry]]:
    """How many records there are, and the newest `limit` of them (oldest first)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.llen(keys.dead)
        pipe.lrange(keys.dead, -limit, -1)
        total, raws = await pipe.execute()
    return int(total), [parse(raw) for raw in raws]


async def read_page(redis: Redis, keys: Keys, offset: int, limit: int) -> tuple[int, list[Entry]]:
    """How many records there are, and `limit` of them, newest first, after passing over
    the `offset` newest (a page of the dashboard's list)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.llen(keys.dead)
        pipe.lrange(keys.dead, -(offset + limit), -(offset + 1))
        total, raws = await pipe.execute()
    return int(total), [parse(raw) for raw in reversed(raws)]


def parse(raw: bytes) -> Entry:
    """A record as stored. Anything else found in the list (written by hand, or by an
    older version) is shown as an `unreadable` record rather than breaking the listing,
    and can still be purged."""
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        return Entry(raw, _unreadable(raw))
    if not isinstance(parsed.get("job_id"), str):
        parsed["job_id"] = None
    parsed["reason"] = str(parsed.get("reason") or "unknown")
    parsed["error"] = str(parsed.get("error") or "")
    if not isinstance(parsed.get("at"), int | float):
        parsed["at"] = 0.0
    parsed.setdefault("payload", None)
    return Entry(raw, cast(DeadLetter, parsed))


def _unreadable(raw: bytes) -> DeadLetter:
    return DeadLetter(
        job_id=None,
        reason="unreadable",
        error="not a dead-letter record",
        at=0.0,
        payload=raw.decode(errors="replace"),
    )


def group(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Records by the name a user gives them, in list order. A job can have several
    records (it was dead-lettered again by a peer that recovered it), which are one
    job to requeue or purge."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.ref, []).append(entry)
    return groups


def select(
    entries: Iterable[Entry], refs: Iterable[str]
) -> tuple[dict[str, list[Entry]], list[str]]:
    """The records of each ref asked for (in the order asked, each once) and the refs
    that name no record."""
    groups = group(entries)
    chosen: dict[str, list[Entry]] = {}
    missing: list[str] = []
    for ref in dict.fromkeys(refs):
        if ref in groups:
            chosen[ref] = groups[ref]
        else:
            missing.append(ref)
    return chosen, missing


async def requeue(
    redis: Redis, keys: Keys, groups: Mapping[str, Sequence[Entry]]
) -> list[Requeued]:
    """Put each job back in line through the conductor, in the order given.

    The envelope requeued is the newest record's that has one. A job with none is
    `refused`; one whose records someone else removed meanwhile is `gone`; one arq
    still holds (a worker finishing it) is `live` and left as it is.
    """
    results: dict[str, Requeued] = {}
    ready: list[tuple[str, Sequence[Entry], dict[str, Any]]] = []
    announced: set[str] | None = None
    for ref, entries in groups.items():
        found = await _newest_envelope(redis, keys, entries)
        if isinstance(found, str):
            results[ref] = Requeued(ref, "refused", found)
            continue
        if entries[-1].record["reason"] == "unknown_task":
            # Requeued, it would wait for a worker that runs its task, perhaps forever:
            # while none does, it stays dead and the user is told what to do.
            if announced is None:
                announced = await announced_tasks(redis, keys)
            if not runs(announced, str(found["task"])):
                results[ref] = Requeued(ref, "refused", _no_worker(str(found["task"])))
                continue
        ready.append((ref, entries, found))
    run = script(redis, "requeue_dead")
    for chunk in _chunks(ready, REQUEUE_CHUNK):
        receipts = await _receipts(redis, keys, [envelope for _, _, envelope in chunk])
        script_keys: list[str] = [keys.dead, keys.ready, keys.doorbell]
        args: list[Any] = [len(arq_jobs.run_keys("")), ATTEMPTS_KEPT, ATTEMPTS_TTL]
        for (_, entries, envelope), receipt in zip(chunk, receipts, strict=True):
            arq_id = keys.arq_job_id(envelope["id"])
            script_keys += [
                arq_jobs.JOB_KEY_PREFIX + arq_id,
                keys.receipts(str(envelope["batch"])),
                keys.attempts(str(envelope["batch"]), str(envelope["id"])),
                *arq_jobs.run_keys(arq_id),
            ]
            args += [len(entries), *(entry.raw for entry in entries), requeued(envelope)]
            args += [envelope["id"], *(receipt or ("", ""))]
        reply = await run(keys=script_keys, args=args)
        for (ref, _, envelope), outcome in zip(chunk, reply, strict=True):
            results[ref] = Requeued(ref, cast(Outcome, outcome.decode()), str(envelope["task"]))
    return [results[ref] for ref in groups]


def _no_worker(task: str) -> str:
    return (
        f"no live worker runs task {task!r}, so it stays dead: start a worker whose "
        "task_packages have it (workers load their tasks when they start), then requeue"
    )


async def _newest_envelope(
    redis: Redis, keys: Keys, entries: Sequence[Entry]
) -> dict[str, Any] | str:
    """The newest envelope among one job's records, or why the newest has none."""
    refusal = ""
    for entry in reversed(entries):
        found = await envelope_of(redis, keys, entry)
        if not isinstance(found, str):
            return found
        refusal = refusal or found
    return refusal


async def envelope_of(redis: Redis, keys: Keys, entry: Entry) -> dict[str, Any] | str:
    """The envelope to put back in line, or why there is none.

    A `lost` record has no payload (the reaper only knows the id), but arq usually
    still has the job: when arq ends a job itself (its own timeout, a function missing
    from a worker) it keeps a result holding the job's arguments, the envelope first.
    """
    record = entry.record
    payload = record["payload"]
    if payload is None and record["reason"] == "lost" and record["job_id"] is not None:
        payload = await _envelope_from_arq(redis, keys.arq_job_id(record["job_id"]))
        if payload is None:
            # Dispatching its manifest again would queue nothing: the batch is done.
            return (
                "lost, and arq kept no copy of its envelope: dispatch the job anew "
                "(in another batch), then purge this record"
            )
    if not isinstance(payload, dict):
        return f"its payload is not a job envelope ({record['reason']})"
    try:
        JOB.validate_python(payload)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        return f"its payload is not a job envelope ({record['reason']}): {where}: {error['msg']}"
    return payload


async def _envelope_from_arq(redis: Redis, arq_id: str) -> Any:
    for key in (arq_jobs.RESULT_KEY_PREFIX + arq_id, arq_jobs.JOB_KEY_PREFIX + arq_id):
        raw = await redis.get(key)
        if raw is None:
            continue
        try:
            stored = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        args = stored.get("a") if isinstance(stored, dict) else None
        if isinstance(args, list) and args:
            return args[0]
    return None


async def _receipts(
    redis: Redis, keys: Keys, envelopes: Sequence[Mapping[str, Any]]
) -> list[tuple[bytes, bytes] | None]:
    """Per job, its final receipt and that receipt marked `retrying`, or None.

    `verify` takes a failed receipt as the job's last word; a requeued job is pending
    again, as a `retrying` one is, until its rerun writes the next receipt. The script
    swaps them only if the receipt is still the one read here.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for envelope in envelopes:
            pipe.hget(keys.receipts(str(envelope["batch"])), str(envelope["id"]))
        stored: list[bytes | None] = await pipe.execute()
    swaps: list[tuple[bytes, bytes] | None] = []
    for raw in stored:
        receipt = orjson.loads(raw) if raw else None
        if raw and isinstance(receipt, dict) and receipt.get("status") in ("failed", "dead"):
            swaps.append((raw, orjson.dumps({**receipt, "status": "retrying"})))
        else:
            swaps.append(None)
    return swaps


async def remove(redis: Redis, keys: Keys, entries: Sequence[Entry]) -> int:
    """Delete exactly these records; returns how many were still there. Records that
    arrived after `entries` were read stay, whatever their position."""
    removed = 0
    for chunk in _chunks(entries, REMOVE_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for entry in chunk:
                pipe.lrem(keys.dead, 1, entry.raw)  # type: ignore[arg-type]  # bytes are fine
            removed += sum(await pipe.execute())
    return removed


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
