"""Batches that wait for batches (`dispatch --after`): what is checked before a held
batch is queued, and its release.

A held batch's jobs are committed to lists of their own (`Keys.held`), not to the
backlog, so no conductor can take one early and a held batch holds up no other work;
the conductors release it (`lua/release_after.lua`, run by `conductor/held.py`) once
every awaited batch has settled, moving its jobs onto the backlog in one step.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.scripts import script

AFTER_POLICIES = ("hold", "run", "cancel")


@dataclass(frozen=True, slots=True)
class Release:
    """What one look at a held batch found: `released`, `waiting`, `blocked`,
    `cancelled` or `not_held`, and the sentence that says why."""

    state: str
    detail: str


async def check_after(redis: Redis, keys: Keys, batch: str, after: Sequence[str]) -> None:
    """Refuse an awaited batch that does not exist (with the closest name that does), and
    a dependency cycle (naming it), before anything of `batch` is queued."""
    for awaited in after:
        if awaited == batch:
            raise UserError(f"--after {awaited}: a batch cannot wait for itself")
        if not await redis.exists(keys.batch(awaited)):
            known = [b.decode() for b in await redis.zrange(keys.batches, -5000, -1)]
            close = difflib.get_close_matches(awaited, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(f"--after {awaited}: no such batch{hint}")
        if await redis.hget(keys.batch(awaited), "adhoc"):  # type: ignore[misc]
            raise UserError(
                f"--after {awaited}: a batch of bare lines a producer pushes is never done "
                "(more may come), so nothing could wait for it; wait for a dispatched batch"
            )
    for awaited in after:
        if (cycle := await _path_back(redis, keys, awaited, batch, [batch, awaited])) is not None:
            raise UserError(f"--after {awaited}: a cycle: {' after '.join(cycle)}")
    state = await redis.hmget(keys.batch(batch), ["complete", "after"])  # type: ignore[misc]
    if state[0] is not None and state[1] is None:
        raise UserError(
            f"batch {batch!r} was dispatched already, not held: --after cannot hold it now; "
            "pass --batch NAME to dispatch it as new work"
        )


async def _path_back(
    redis: Redis, keys: Keys, start: str, target: str, path: list[str]
) -> list[str] | None:
    """The chain of `after`s from `start` that leads back to `target`, if any."""
    raw = await redis.hget(keys.batch(start), "after")  # type: ignore[misc]
    for awaited in raw.decode().split(",") if raw else []:
        if awaited == target:
            return [*path, target]
        if awaited not in path and len(path) < 100:
            found = await _path_back(redis, keys, awaited, target, [*path, awaited])
            if found is not None:
                return found
    return None


async def hold(redis: Redis, keys: Keys, batch: str, after: Sequence[str], policy: str) -> bool:
    """Mark `batch` held (its jobs are in its held lists); False if released before."""
    held = await script(redis, "hold_batch")(
        keys=[keys.batch(batch), keys.held_batches], args=[batch, ",".join(after), policy]
    )
    return bool(held)


async def look(redis: Redis, keys: Keys, batch: str, *, mode: str = "check") -> Release:
    """Release `batch` if what it waits for has settled, atomically; `mode` "force":
    whatever it waits for, "cancel": it was marked cancelled (see release_after.lua)."""
    state, detail = await script(redis, "release_after")(
        keys=[keys.held_batches, keys.doorbell], args=[keys.root, batch, mode, time.time()]
    )
    return Release(state.decode(), detail.decode())


async def release(redis: Redis, keys: Keys, batch: str) -> Release:
    """`orchestrator release BATCH`: let a held batch run now, whatever it waits for."""
    if not await redis.exists(keys.batch(batch)):
        known = [b.decode() for b in await redis.zrange(keys.batches, -5000, -1)]
        close = difflib.get_close_matches(batch, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"no such batch {batch!r}{hint}")
    if not await redis.hexists(keys.batch(batch), "held"):  # type: ignore[misc]
        raise UserError(f"batch {batch!r} is not held (nothing to release)")
    return await look(redis, keys, batch, mode="force")


async def held_batches(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    """Each held batch: its name, state (`waiting` or `blocked`), what it waits for, its
    policy and backlog — as `status` and `verify` show them."""
    names = sorted(b.decode() for b in await redis.smembers(keys.held_batches))  # type: ignore[misc]
    found = []
    for name in names:
        fields = ("held", "after", "after_policy", "waiting_for", "backlog")
        values = await redis.hmget(keys.batch(name), list(fields))  # type: ignore[misc]
        if values[0] is None:
            continue
        record = {f: (v or b"").decode() for f, v in zip(fields, values, strict=True)}
        found.append({"batch": name, **record})
    return found


async def held_lists(redis: Redis, keys: Keys) -> list[str]:
    """The lists the held batches' jobs wait in: places `cancel` sweeps."""
    lists = []
    for raw in sorted(await redis.smembers(keys.held_batches)):  # type: ignore[misc]
        batch = raw.decode()
        levels = await redis.zrange(keys.held_levels(batch), 0, -1)
        lists += [keys.held(batch, level) for level in (0, *(int(n) for n in levels))]
    return lists


async def release_if_cancelled(redis: Redis, keys: Keys, batches: Sequence[str]) -> None:
    """`cancel`, after its sweep took the held batches' jobs (each with its `cancelled`
    receipt): the batches are held no more (anything left goes behind the mark)."""
    for batch in batches:
        if await redis.hexists(keys.batch(batch), "held"):  # type: ignore[misc]
            await look(redis, keys, batch, mode="cancel")


async def held_line(redis: Redis, keys: Keys, batch: str) -> str | None:
    """The line `verify` shows of a held batch (`held (waiting): waiting for batch X: 12
    of 40 pending`), read now, or None when the batch is not held."""
    state, waiting, after = await redis.hmget(keys.batch(batch), ["held", "waiting_for", "after"])  # type: ignore[misc]
    if state is None:
        return None
    if state == b"waiting" and after:
        parts = []
        for awaited in after.decode().split(","):
            pending, bad, total = await script(redis, "settled")(
                keys=[keys.batch(awaited)], args=[keys.root, awaited]
            )
            if int(pending):
                parts.append(f"batch {awaited}: {pending} of {total} pending")
            else:
                parts.append(f"batch {awaited}: settled ({bad} not succeeded)")
        return f"held (waiting): waiting for {'; '.join(parts)}"
    return f"held ({state.decode()}): {(waiting or b'').decode()}"
