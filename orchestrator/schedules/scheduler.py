"""The scheduler: inside every conductor, it looks twice a second for schedule ticks
that are due and fires each once, whichever conductor claims it first.

A tick is claimed by a compare-and-set on the schedule's last tick (`lua/claim_tick.lua`):
two conductors that see it due together cannot both win, and a conductor that comes
back after a peer fired it finds it claimed. Ticks before a schedule was first seen are
not its to fire. The firing itself (planning in a child process, then dispatch) runs
in a task of its own, so a slow planner never holds up routing or the next look.

Every tick less than `MISSED_AFTER` seconds late is fired, each once and in order (a
look delayed by a busy machine catches up). Missed ticks: ticks found more than
`MISSED_AFTER` seconds late (no conductor ran at the time) are fired once, the latest
of them only, under `missed = "run_once"` (the
default: a nightly repair that a deploy made miss still runs that night, once), and
recorded as `missed` without firing under `missed = "skip"`. A paused schedule's ticks
are claimed and recorded as `paused`, so resuming fires no backlog of them.
"""

from __future__ import annotations

import time
from contextlib import suppress

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.schedule import ScheduleSettings, batch_name
from orchestrator.schedules.firing import fire
from orchestrator.schedules.state import ScheduleStore
from orchestrator.settings import Settings
from orchestrator.workflow import describe_error

log = structlog.get_logger("orchestrator.schedules")
LOOK_EVERY = 0.5  # seconds between looks: a tick fires within this of its time
MISSED_AFTER = 30.0  # seconds late a tick counts as missed (no conductor ran then)
CATCH_UP = 100  # ticks a look fires at most, each less than MISSED_AFTER late


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        conductor_id: str,
        metrics: Metrics,
        outage: RedisOutage | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.id = conductor_id
        self.metrics = metrics
        self.store = ScheduleStore(redis, Keys(settings.namespace))
        self.log = log.bind(conductor=conductor_id)
        self.outage = outage or RedisOutage(self.log)

    async def run(self) -> None:
        async with anyio.create_task_group() as firing:
            while True:
                try:
                    await self.look_once(firing)
                except (RedisError, OSError) as exc:
                    self.outage.failed(exc, during="schedules")
                except Exception:  # a bug must stop the schedules, not the routing
                    self.log.exception("schedules_error")
                await anyio.sleep(LOOK_EVERY)

    async def look_once(self, firing: anyio.abc.TaskGroup) -> None:
        now = time.time()
        paused = await self.store.paused()
        for schedule in self.settings.schedules:
            await self._look(schedule, now, schedule.name in paused, firing)

    async def _look(
        self, schedule: ScheduleSettings, now: float, paused: bool, firing: anyio.abc.TaskGroup
    ) -> None:
        fields = await self.store.fields(schedule.name)
        since = await self.store.first_seen(schedule.name, now)
        anchor = max(float(fields.get("last_tick", "-1")), since)
        for _ in range(CATCH_UP):
            due = schedule.next_tick(anchor)
            if due > now:
                return
            skipped = 0
            if now - due > MISSED_AFTER:
                # Missed while no conductor ran: the latest only (see the docstring).
                latest = schedule.last_tick(now)
                skipped, due = _ticks_between(schedule, anchor, latest), latest
            if not await self.store.claim(schedule.name, due, self.id, now):
                return  # a peer fired it
            anchor = due
            await self._act(schedule, due, now - due, skipped, paused, firing)

    async def _act(
        self,
        schedule: ScheduleSettings,
        due: float,
        late: float,
        skipped: int,
        paused: bool,
        firing: anyio.abc.TaskGroup,
    ) -> None:
        """What a claimed tick does: fired, or recorded as paused or missed."""
        if skipped:
            self.log.warning(
                "schedule_ticks_missed", schedule=schedule.name, tick=due, count=skipped,
                policy=schedule.missed,
            )  # fmt: skip
        if paused:
            await self.store.drop_turn(schedule.name, due)
            await self._record(schedule, "paused", "the schedule is paused", late)
        elif late > MISSED_AFTER and schedule.missed == "skip":
            await self.store.drop_turn(schedule.name, due)
            detail = f"{batch_name(schedule, due)} not fired: {late:.0f} s late (missed = skip)"
            await self._record(schedule, "missed", detail, late)
        else:
            firing.start_soon(self._fire, schedule, due, late)

    async def _fire(self, schedule: ScheduleSettings, tick: float, late: float) -> None:
        """Fire a tick in a task of its own: whatever goes wrong costs this tick (a
        `failed` outcome), never the conductor's routing."""
        try:
            await fire(
                self.settings, self.redis, schedule, tick, lateness=late, metrics=self.metrics,
                logger=self.log,
            )  # fmt: skip
            return
        except (RedisError, OSError) as exc:
            self.outage.failed(exc, during=f"schedule {schedule.name}")
            said = f"Redis failed while firing: {exc}"
        except UserError as exc:  # e.g. cancel_previous refused
            said = exc.message
        except Exception as exc:  # a bug: logged with its traceback, the conductor goes on
            self.log.exception("schedule_error", schedule=schedule.name, tick=tick)
            said = describe_error(exc)
        with suppress(RedisError, OSError), anyio.CancelScope(shield=True):
            with anyio.move_on_after(2):
                await self._record(schedule, "failed", said, late)

    async def _record(
        self, schedule: ScheduleSettings, outcome: str, detail: str, late: float
    ) -> None:
        await self.store.record(schedule.name, outcome, detail, lateness=late)
        self.metrics.schedule_fired(schedule.name, outcome, late)
        self.log.info(f"schedule_{outcome}", schedule=schedule.name, detail=detail)


def _ticks_between(schedule: ScheduleSettings, after: float, before: float) -> int:
    """Ticks strictly between two times (at most 1000 counted): the ones never fired."""
    count, tick = 0, schedule.next_tick(after)
    while tick < before and count < 1000:
        count, tick = count + 1, schedule.next_tick(tick)
    return count
