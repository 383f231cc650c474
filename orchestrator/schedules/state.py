"""What Redis keeps of each schedule (`Keys.schedule`), read by `schedules`, `status`
and the metrics, written by whoever fires a tick.

Fields: `since` (when a conductor first saw the schedule: ticks before it never fire),
`last_tick` (the last tick claimed, the compare-and-set of `lua/claim_tick.lua`),
`last_batch`, `outcome` (`dispatched`, `nothing`, `failed`, `skipped`, `missed`,
`paused`), `detail` (its one line), `outcome_at`, `lateness` (seconds between the
tick and its firing). Pauses are `Keys.paused_schedules`, as backlogs' and pools' are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.schedule import ScheduleSettings
from orchestrator.scripts import script


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One schedule as a reader sees it: its setting's timing and what it last did."""

    name: str
    workflow: str
    backlog: str
    timing: str  # `cron 0 2 * * * (Europe/Berlin)` or `every 10m`
    next_tick: float | None  # None while paused
    paused_since: float | None
    last_tick: float | None
    last_batch: str | None
    outcome: str | None
    detail: str | None
    outcome_at: float | None
    lateness: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "workflow": self.workflow, "backlog": self.backlog,
            "timing": self.timing, "next_tick": self.next_tick, "paused": self.paused_since,
            "last_tick": self.last_tick, "last_batch": self.last_batch,
            "outcome": self.outcome, "detail": self.detail, "outcome_at": self.outcome_at,
            "lateness": self.lateness,
        }  # fmt: skip


class ScheduleStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._claim = script(redis, "claim_tick")

    async def fields(self, name: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.schedule(name))  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def first_seen(self, name: str, now: float) -> float:
        """When a conductor first saw the schedule (set now if never): ticks before that
        are not the schedule's to fire."""
        key = self.keys.schedule(name)
        await self.redis.hsetnx(key, "since", f"{now:.6f}")  # type: ignore[misc]
        return float(await self.redis.hget(key, "since"))  # type: ignore[misc]

    async def claim(self, name: str, tick: float, conductor: str, now: float) -> bool:
        won = await self._claim(
            keys=[self.keys.schedule(name), self.keys.schedule_turns(name)],
            args=[turn_member(tick), conductor, now],
        )
        return bool(won)

    async def drop_turn(self, name: str, tick: float) -> None:
        """A claimed tick that is not fired (paused, missed) leaves the turns at once."""
        await self.redis.zrem(self.keys.schedule_turns(name), turn_member(tick))

    async def record(
        self,
        name: str,
        outcome: str,
        detail: str,
        *,
        batch: str | None = None,
        lateness: float | None = None,
    ) -> None:
        values: dict[str, str] = {
            "outcome": outcome, "detail": detail, "outcome_at": f"{time.time():.6f}",
        }  # fmt: skip
        if batch is not None:
            values["last_batch"] = batch
        if lateness is not None:
            values["lateness"] = f"{lateness:.3f}"
        await self.redis.hset(self.keys.schedule(name), mapping=values)  # type: ignore[misc]

    async def paused(self) -> dict[str, float]:
        raw = await self.redis.hgetall(self.keys.paused_schedules)  # type: ignore[misc]
        return {k.decode(): float(v) for k, v in raw.items()}

    async def pause(self, name: str, now: float) -> bool:
        """True when this paused it, False when it was paused already."""
        return bool(await self.redis.hsetnx(self.keys.paused_schedules, name, f"{now:.6f}"))  # type: ignore[misc]

    async def resume(self, name: str) -> bool:
        return bool(await self.redis.hdel(self.keys.paused_schedules, name))  # type: ignore[misc]

    async def states(self, schedules: list[ScheduleSettings], now: float) -> list[ScheduleState]:
        paused = await self.paused()
        found = []
        for schedule in schedules:
            fields = await self.fields(schedule.name)
            last = _float(fields.get("last_tick"))
            anchor = max(last or 0.0, _float(fields.get("since")) or now, 0.0)
            found.append(
                ScheduleState(
                    name=schedule.name,
                    workflow=schedule.workflow,
                    backlog=schedule.backlog,
                    timing=timing(schedule),
                    next_tick=None if schedule.name in paused else schedule.next_tick(anchor),
                    paused_since=paused.get(schedule.name),
                    last_tick=last,
                    last_batch=fields.get("last_batch"),
                    outcome=fields.get("outcome"),
                    detail=fields.get("detail"),
                    outcome_at=_float(fields.get("outcome_at")),
                    lateness=_float(fields.get("lateness")),
                )
            )
        return found


def turn_member(tick: float) -> str:
    """A tick as a member of the turns set (and the claim's compare-and-set)."""
    return f"{tick:.3f}"


def timing(schedule: ScheduleSettings) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    return f"every {schedule.every}"


def _float(text: str | None) -> float | None:
    return float(text) if text else None
