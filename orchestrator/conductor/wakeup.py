"""What wakes a conductor between rounds, so that it never polls.

The conductor sleeps in this process (a timer exact to the millisecond, where a
`BLMOVE` timeout fires only on Redis's timer tick, 100 ms at `hz 10`) until the first of:

- a ring of the doorbell (`Keys.doorbell`): dispatch, `dlq requeue`, retry, a paused
  pool's take-back, recovery and resume ring it in the step that queues the job; a task
  here blocks on it with `BLPOP`. A ring carries no job, so a lost one delays a job by
  at most `idle_block`;
- a producer's bare `RPUSH` onto a backlog, which rings nothing: while the conductor
  idles with a free slot, one task per backlog blocks on its list with `BLMOVE list
  list RIGHT RIGHT`, which puts the last job back where it was in the same step — the
  job never leaves the list — and returns once the list has one;
- a worker announcing a freed slot, or a pause or resume (the events channel);
- the instant the next deferred job is due (the caller's `at_most`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.typing import FilteringBoundLogger

from orchestrator.connection import blocking, on_messages
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage

# Backlogs watched with a blocked connection each; past these, a bare push onto another
# waits for a ring or `idle_block` (work queued through this project always rings).
MAX_WATCHED = 64
# Seconds a blocked watcher or doorbell command waits before it blocks again: no
# deadline depends on it (the loop keeps its own), so only idle cost does.
BLOCK = 30
# Waits shorter than this (pacing rate-limited jobs) do not arm the watchers: a job
# landing meanwhile is taken at the next round anyway, and arming costs each round.
ARM_AFTER = 0.05
RETRY_AFTER = 1.0  # seconds, after Redis went away


class _Idle:
    """One idle wait of the loop with a free slot: when it began, and when it ended."""

    def __init__(self) -> None:
        self.began = anyio.Event()
        self.ended = anyio.Event()


class Wakeup:
    """The conductor's sleep between rounds and everything that cuts it short.

    `backlogs` is the conductor's own list (it grows as backlogs are learnt), `paused`
    says which backlogs are paused now, `learn` adds backlogs from the `backlogs` set,
    `outage` hears of a doorbell that cannot reach Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        backlogs: list[str],
        paused: Callable[[], frozenset[str]],
        learn: Callable[[Iterable[bytes]], None],
        log: FilteringBoundLogger,
        outage: RedisOutage,
    ) -> None:
        self.redis = redis
        self.outage = outage
        self.keys = keys
        self._backlogs = backlogs
        self._paused = paused
        self._learn = learn
        self.log = log
        self._event = anyio.Event()
        self._idle = _Idle()

    def set(self) -> None:
        """Wake the loop now, or at the start of its next wait."""
        self._event.set()

    async def wait(self, at_most: float, *, idle: bool = False) -> None:
        """Sleep until woken or for `at_most` seconds; `idle`: with a free slot, so the
        backlogs' watchers are armed meanwhile (unless the wait is short).

        The event is replaced only after the wait, with no await in between: a wake-up
        that comes while a round runs is kept for the next wait, which returns at once."""
        if at_most > 0:
            current = self._idle
            idle = idle and at_most >= ARM_AFTER
            if idle:
                current.began.set()
            with anyio.move_on_after(at_most):
                await self._event.wait()
            if idle:
                current.ended.set()
                self._idle = _Idle()
        self._event = anyio.Event()

    async def run(self) -> None:
        """Every source of wake-ups, until cancelled."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(on_messages, self.redis, self.keys.events, self)
            tasks.start_soon(self._answer_doorbell)
            tasks.start_soon(self._watch_backlogs, tasks)

    async def _answer_doorbell(self) -> None:
        """Block on the doorbell on a connection of its own and wake the loop on a ring.

        A ring may come from a dispatch that created a backlog: the backlogs are learnt
        before the loop looks (a heartbeat would learn them only later). Rings left are
        cleared with the one taken: the round it starts serves them all."""
        while True:
            try:
                with blocking(BLOCK):
                    rang = await self.redis.blpop([self.keys.doorbell], BLOCK)  # type: ignore[misc]
                if rang is None:
                    continue
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(self.keys.doorbell)
                    pipe.smembers(self.keys.backlogs)
                    _, names = await pipe.execute()
                self._learn(names)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.outage.failed(exc, during="doorbell", retry_in=RETRY_AFTER)
                await anyio.sleep(RETRY_AFTER)
            self.set()

    async def _watch_backlogs(self, tasks: TaskGroup) -> None:
        """Start a watcher for each backlog as the conductor learns it."""
        watched: set[str] = set()
        while True:
            for name in self._backlogs[:MAX_WATCHED]:
                if name not in watched:
                    watched.add(name)
                    tasks.start_soon(self._watch, name)
            idle = self._idle
            await idle.began.wait()
            await idle.ended.wait()

    async def _watch(self, name: str) -> None:
        """Wake the loop when a job lands on `name`'s list while the loop idles.

        Armed only during an idle wait, and once per idle wait when it fires: a backlog
        that keeps jobs (paused, or its jobs wait for room) costs nothing."""
        key = self.keys.backlog(name)
        while True:
            idle = self._idle
            await idle.began.wait()
            if name in self._paused():
                await idle.ended.wait()
                continue
            try:
                with blocking(BLOCK):
                    landed = await self.redis.blmove(key, key, BLOCK, "RIGHT", "RIGHT")
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await anyio.sleep(RETRY_AFTER)
                continue
            if landed is not None:
                self.set()
                await idle.ended.wait()
