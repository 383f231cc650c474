"""Finding what a control command names: a batch (with a did-you-mean when it is not
known), a job's receipt in the newest batch that has one, the ids in a list or set of
envelopes. Shared by `cancel` and `retry`, read-only."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import orjson
from redis.asyncio import Redis

from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.receipts import receipt_status

SCAN_CHUNK = 5000  # items read per call while looking for a job by id


async def unknown_batch(redis: Redis, keys: Keys, name: str, consequence: str) -> UserError:
    """The one line for a batch id nothing knows, with the closest known one when a typo
    is likely."""
    known = [raw.decode() for raw in await redis.zrevrange(keys.batches, 0, 9999)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "`orchestrator status` lists the batches"
    return UserError(f"unknown batch {name!r}: {consequence}; {hint}")


async def items(redis: Redis, kind: str, key: str) -> list[bytes]:
    """Every item of a list (`kind` "list") or sorted set, read in chunks."""
    found: list[bytes] = []
    start = 0
    while True:
        if kind == "list":
            chunk = await redis.lrange(key, start, start + SCAN_CHUNK - 1)  # type: ignore[misc]
        else:
            chunk = await redis.zrange(key, start, start + SCAN_CHUNK - 1)
        found += chunk
        if len(chunk) < SCAN_CHUNK:
            return found
        start += SCAN_CHUNK


async def receipts_of(redis: Redis, keys: Keys, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Job id → (batch, status) of its receipt, for ids that are in no queue: the newest
    batch that has one."""
    if not ids:
        return {}
    batches = [raw.decode() for raw in await redis.zrevrange(keys.batches, 0, -1)]
    found: dict[str, tuple[str, str]] = {}
    for job_id in ids:
        async with redis.pipeline(transaction=False) as pipe:
            for batch in batches:
                pipe.hget(keys.receipts(batch), job_id)
            raws = await pipe.execute()
        for batch, raw in zip(batches, raws, strict=True):
            status = receipt_status(raw)
            if status is not None:
                found[job_id] = (batch, status)
                break
    return found


def envelope_ids(item: bytes) -> dict[str, str] | None:
    """An envelope's `id` and `batch`, or None for what is not one."""
    try:
        parsed = orjson.loads(item)
    except orjson.JSONDecodeError:
        return None
    if (
        isinstance(parsed, dict)
        and isinstance(parsed.get("id"), str)
        and isinstance(parsed.get("batch"), str)
    ):
        return {"id": parsed["id"], "batch": parsed["batch"]}
    return None
