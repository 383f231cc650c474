"""Fire one tick of a schedule: apply its overlap policy, plan and dispatch in a child
process (`planner`) bounded by `plan_timeout`, and record the outcome.

Whoever calls this has claimed the tick (`ScheduleStore.claim`) or is a person
(`schedules run`): the tick's batch name (`<schedule>@<tick>`) makes a second dispatch
of it queue nothing anyway. Every outcome is one log line and the schedule's visible
last outcome; nothing here raises for a planner's failure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import orjson
import structlog
from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.schedule import ScheduleSettings, batch_name
from orchestrator.schedules.state import ScheduleStore, turn_member
from orchestrator.scripts import script
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.schedules")
OUTPUT_LIMIT = 2000  # characters of a planner's output kept in the log line
TURN_MARGIN = 30.0  # seconds beyond its time limit a tick may hold up the next


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # see state.OUTCOMES
    detail: str
    batch: str | None = None


async def fire(
    settings: Settings,
    redis: Redis,
    schedule: ScheduleSettings,
    tick: float,
    *,
    lateness: float = 0.0,
    metrics: Metrics | None = None,
    logger: FilteringBoundLogger | None = None,
    manual: bool = False,
) -> Outcome:
    """Plan and dispatch `schedule`'s `tick` (`manual`: a `schedules run`); the outcome
    is recorded, logged, counted."""
    bound = (logger or log).bind(schedule=schedule.name, tick=tick, lateness=round(lateness, 3))
    keys = Keys(settings.namespace)
    store = ScheduleStore(redis, keys)
    batch = batch_name(schedule, tick, manual=manual)
    async with _one_at_a_time(redis, keys, schedule, tick):
        # Once its turn came, a stop lets the tick finish (its planner is bounded): its
        # batch and its outcome are recorded together, not one without the other.
        with anyio.CancelScope(shield=True):
            after, policy, skip = await _overlap(
                settings, redis, keys, store, schedule, batch, bound
            )
            if skip is not None:
                outcome = skip
            else:
                outcome = await _plan_and_dispatch(settings, schedule, batch, after, policy, bound)
            await store.record(
                schedule.name, outcome.outcome, outcome.detail, batch=outcome.batch,
                lateness=lateness,
            )  # fmt: skip
    if metrics is not None:
        metrics.schedule_fired(schedule.name, outcome.outcome, lateness)
    level = bound.warning if outcome.outcome == "failed" else bound.info
    level(f"schedule_{outcome.outcome}", batch=outcome.batch, detail=outcome.detail)
    return outcome


@asynccontextmanager
async def _one_at_a_time(
    redis: Redis, keys: Keys, schedule: ScheduleSettings, tick: float
) -> AsyncIterator[None]:
    """Wait for the tick's turn: the ticks of one schedule fire one at a time, in tick
    order (a slow planner, two conductors), so that each finds the last one's batch when
    it applies its overlap. The first tick in line that stays first for longer than its
    time limit belonged to a conductor that died: it is dropped."""
    turns, member = keys.schedule_turns(schedule.name), turn_member(tick)
    await redis.zadd(turns, {member: tick}, nx=True)  # a `schedules run` joins here
    patience = schedule.plan_timeout + TURN_MARGIN
    first_since: dict[bytes, float] = {}
    try:
        while ahead := await redis.zrangebyscore(turns, "-inf", f"({tick}", start=0, num=1):
            if time.monotonic() - first_since.setdefault(ahead[0], time.monotonic()) > patience:
                await redis.zrem(turns, ahead[0])
            await anyio.sleep(0.1)
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await redis.zrem(turns, member)


async def _overlap(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    store: ScheduleStore,
    schedule: ScheduleSettings,
    batch: str,
    bound: FilteringBoundLogger,
) -> tuple[list[str], str, Outcome | None]:
    """What the new batch waits for and under which policy, or the outcome of a tick
    skipped because the last run's batch has not settled (`overlap = "skip"`)."""
    after: list[str] = []
    for other in schedule.after:
        if last := (await store.fields(other)).get("last_batch"):
            after.append(last)
    policy: str = schedule.after_policy
    previous = (await store.fields(schedule.name)).get("last_batch")
    if previous and previous != batch:
        pending, _, total = await script(redis, "settled")(
            keys=[keys.batch(previous)], args=[keys.root, previous]
        )
        if int(pending) > 0:
            said = f"batch {previous} has not settled ({pending} of {total} pending)"
            if schedule.overlap == "skip":
                return after, policy, Outcome("skipped", said)
            if schedule.overlap == "queue":
                bound.info("schedule_queued_behind", previous=previous, detail=said)
                if not after:
                    policy = "run"  # queued behind its own last run, whatever that did
                after.append(previous)
            else:
                from orchestrator.control.cancel import Canceller

                await Canceller(redis, settings).batches([previous], running=True, wait=30.0)
                bound.info("schedule_cancelled_previous", previous=previous, detail=said)
    return after, policy, None


async def _plan_and_dispatch(
    settings: Settings,
    schedule: ScheduleSettings,
    batch: str,
    after: list[str],
    policy: str,
    bound: FilteringBoundLogger,
) -> Outcome:
    request = {
        "workflow": schedule.workflow, "args": schedule.args,
        "manifests_dir": str(settings.manifests_dir), "task_packages": settings.task_packages,
        "pools": settings.pool_names, "redis_url": settings.redis_url,
        "namespace": settings.namespace, "batch": batch, "backlog": schedule.backlog,
        "after": after, "after_policy": policy, "max_line_bytes": settings.max_line_bytes,
    }  # fmt: skip
    started = time.monotonic()
    command = [sys.executable, "-m", "orchestrator.schedules.planner"]
    process = await anyio.open_process(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()
    timed_out = False
    try:
        await process.stdin.send(orjson.dumps(request))
        await process.stdin.aclose()
        with anyio.move_on_after(schedule.plan_timeout) as scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_collect, process.stdout, out)
                tasks.start_soon(_collect, process.stderr, err)
            await process.wait()
        timed_out = scope.cancelled_caught
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()
    output = err.decode(errors="replace").strip()
    seconds = round(time.monotonic() - started, 3)
    bound.info(
        "schedule_planner_exited", exit=process.returncode, seconds=seconds,
        output=output[-OUTPUT_LIMIT:],
    )  # fmt: skip
    if timed_out:
        return Outcome("failed", f"the planner ran over plan_timeout ({schedule.plan_timeout:g} s)")
    if process.returncode != 0:
        last = output.splitlines()[-1] if output else "no output"
        return Outcome("failed", f"the planner exited {process.returncode}: {last}")
    try:
        result = orjson.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Outcome("failed", "the planner printed no result")
    if result["outcome"] == "nothing":
        return Outcome("nothing", result["detail"])
    queued = f"queued {result['queued']} of {result['total']} jobs from {result['manifest']}"
    if after:
        queued += f", held until {', '.join(after)} settled"
    return Outcome("dispatched", queued, result["batch"])


async def _collect(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into.extend(chunk)
