"""The conductor: takes jobs off the backlogs and forwards them to the pools' arq queues.

One round is two scripts. The first (`lua/intake.lua`) releases deferred jobs that are
due, puts back in line the jobs that waited for a worker running their task once one
announces it, reads the pools' free slots and takes at most that many jobs (ready jobs
first, then jobs waiting for a pool that has room, then the backlogs' priority levels,
highest first, each level's backlogs in their configured order; paused backlogs not at
all, paused pools counted full) into this conductor's processing list; the second
(`lua/forward.lua`) routes them all atomically, to pools whose live workers announce
the job's task. The conductor holds no task code: the workers' heartbeats say what
exists.

Between rounds the conductor sleeps in this process until something wakes it
(`wakeup`: the doorbell that queueing a job rings, a job landing on a
backlog, a freed slot) or the next deferred job is due: idle costs nothing, new work on
any backlog is taken at once, and a rate-limited job goes at its instant, to the
millisecond. A job is always in exactly one
Redis structure — a backlog, a processing list, an arq queue, the deferred set, a
waiting list (for a full pool, or for a worker that runs its task) or the dead letters
— so a conductor that dies loses nothing: a peer sees its heartbeat lapse and puts its
processing list back on the ready list. Bare manifest lines a producer pushed become
envelopes here (`dispatch/bare_lines.py`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.conductor.forwarding import Forwarder
from orchestrator.conductor.held import HeldBatches
from orchestrator.conductor.liveness import RELEASE_BATCH, Liveness
from orchestrator.conductor.wakeup import Wakeup
from orchestrator.connection import RETRY_AT_MOST
from orchestrator.eviction import FULL_HINT, is_oom
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.priority import level_separator
from orchestrator.retention.pruner import Pruner
from orchestrator.scaling.scaler import Scaler
from orchestrator.scripts import script
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.conductor")
MAX_BACKOFF = RETRY_AT_MOST  # seconds between tries at most while Redis is away
# Seconds between rounds while jobs wait for a full pool and another pool idles: a slot
# freed announces itself on the events channel; this is in case that message is lost.
STALLED_BLOCK = 0.25


class Conductor:
    """The conductor's loop: each round's intake and the waits between rounds. Routing
    what a round took is `forwarding`'s; heartbeats and recovery are
    `liveness`'s."""

    def __init__(self, settings: Settings, redis: Redis, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.redis = redis
        # Until then a pool with no live worker holds back the pools after it (see
        # forward.lua): at start-up every pool gets one heartbeat interval to announce.
        self._hold_until = time.monotonic() + settings.heartbeat_interval
        self.keys = Keys(settings.namespace)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.processing = self.keys.processing(self.id)
        self._backlogs: list[str] = list(settings.backlogs)
        self._intake_keys = [
            self.processing, self.keys.ready, self.keys.deferred, self.keys.no_worker_tasks,
            self.keys.paused_backlogs, self.keys.paused_pools,
        ]  # fmt: skip
        self._intake_args: list[Any] = [
            self.keys.root,
            settings.intake_batch,
            RELEASE_BATCH,
            len(settings.pools),
        ]
        for pool in settings.ordered_pools:
            self._intake_args += [pool.name, pool.max_in_flight or 0]
        self._intake_args.append(level_separator(self.keys))
        self._paused: dict[str, frozenset[str]] = {"backlog": frozenset(), "pool": frozenset()}
        self._intake = script(redis, "intake")
        self.log = log.bind(conductor=self.id)
        self.outage = RedisOutage(self.log)  # every loop's failures, logged once an outage
        self._forwarder = Forwarder(
            settings, redis, self.keys, self.processing, self.metrics, self.log
        )
        self._liveness = Liveness(
            settings, redis, self.keys, self.id, self._backlogs, self.metrics, self.log,
            self.outage,
        )  # fmt: skip
        self._wakeup = Wakeup(
            redis, self.keys, self._backlogs, lambda: self._paused["backlog"],
            self._liveness.learn_backlogs, self.log, self.outage,
        )  # fmt: skip
        self._scaler: Scaler | None = None

    @property
    def forwarded(self) -> int:
        """How many jobs this conductor forwarded to a pool."""
        return self._forwarder.forwarded

    async def run(self, *, stop: anyio.Event | None = None) -> None:
        """Conduct until `stop` is set (or the task is cancelled), then hand back what
        this conductor holds."""
        stop = stop or anyio.Event()
        self.log.info("conductor_started", backlogs=self._backlogs)
        try:
            await self._beat()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._liveness.heartbeat_forever)
                tasks.start_soon(self._wakeup.run)
                tasks.start_soon(self._conduct)
                # Settled batches archived and removed, dead letters bounded (`retention`).
                pruner = Pruner(self.settings, self.redis, self.id, self.metrics, self.outage)
                tasks.start_soon(pruner.run)
                tasks.start_soon(HeldBatches(self.redis, self.keys, self.log, self.outage).run)
                if self.settings.schedules:
                    from orchestrator.schedules.scheduler import Scheduler

                    scheduler = Scheduler(
                        self.settings, self.redis, self.id, self.metrics, self.outage
                    )
                    tasks.start_soon(scheduler.run)
                if any(pool.scaler for pool in self.settings.pools):
                    self._scaler = Scaler(
                        self.settings, self.redis, self.id, self.metrics, self.outage
                    )
                    tasks.start_soon(self._scaler.run)
                await stop.wait()
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._hand_back()

    async def hurry(self) -> None:
        """Asked twice to stop: the workers this conductor's scaler launched stop at once
        too (they hand their running jobs back), as a fixed worker told twice does."""
        self.log.info("conductor_hurrying")
        if self._scaler is not None:
            await self._scaler.hurry()

    # --- the main loop ----------------------------------------------------------------

    async def _conduct(self) -> None:
        backoff = 0.1
        owe_hand_back = full = False
        while True:
            try:
                if owe_hand_back:
                    # A round broke off with jobs taken and not routed (the forward is
                    # atomic, so none of them went anywhere): put them back in line.
                    await self._take_back(self.id, forget=False)
                    owe_hand_back = False
                moved = await self._round()
                backoff = 0.1
                self.outage.answered()
                if full and moved:  # a round that only read proves nothing
                    self.log.info("redis_writable")
                    full = False
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.outage.failed(exc, retry_in=backoff)
                owe_hand_back = True
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except ResponseError as exc:
                if is_oom(exc):
                    # Redis is full: what is taken stays where it is; said once a spell.
                    if not full:
                        self.log.warning("redis_full", error=str(exc), hint=FULL_HINT)
                    full = True
                    owe_hand_back = True
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                # A script refused (a bug, or a server without a needed command): keep
                # the jobs where they are, say so loudly, and try again later.
                self.log.error("redis_error", error=str(exc), retry_in=MAX_BACKOFF)
                owe_hand_back = True
                await anyio.sleep(MAX_BACKOFF)

    async def _round(self) -> bool:
        """One intake and its routing, or a wait; whether it took (and so wrote) jobs."""
        backlogs = [
            part
            for name in self._backlogs
            for part in (name, self.keys.backlog(name), self.keys.backlog_levels(name))
        ]
        sent = time.monotonic()
        reply = await self._intake(keys=self._intake_keys, args=[*self._intake_args, *backlogs])
        # Redis read its clock between sending and replying: count the wait from the middle.
        replied = (sent + time.monotonic()) / 2
        taken, next_due_us, free, stalled, now_ms, origins, _, *paused = reply
        self._note_pauses(*paused)
        if taken:
            self.log.debug("intake", jobs=len(taken))
            sources = [self._backlogs[n - 1] if n > 0 else None for n in origins]
            hold = time.monotonic() < self._hold_until
            hold_until = await self._forwarder.route(taken, sources, int(now_ms), hold=hold)
            if hold_until is not None:
                # Some jobs could go nowhere yet and went back to the head of the line:
                # taking them again at once would spin. Wait for a slot or their time.
                await self._wakeup.wait(max(hold_until - time.time(), 0.001))
            elif self._forwarder.settled and len(taken) < self.settings.intake_batch:
                # The intake took all it could and every job went where it ends: another
                # one now would only read what this one read (an intake a job, when slots
                # free one by one). Wait as that intake would; what came meanwhile (a
                # freed slot, a dispatch) has already woken the wait.
                room = sum(max(int(n), 0) for n in free) > len(taken)
                await self._rest(room, stalled, next_due_us, replied)
            return True
        await self._rest(sum(max(int(n), 0) for n in free) > 0, stalled, next_due_us, replied)
        return False

    async def _rest(self, room: bool, stalled: int, next_due_us: int, replied: float) -> None:
        """The wait after a round, as long as nothing can change without waking it:
        `room`, a pool has a free slot (the backlogs are watched meanwhile); `stalled`,
        jobs wait for pools that are full; the next deferred job is due `next_due_us`
        after the intake (`replied`: when, on this clock)."""
        cap = self.settings.idle_block
        if not room:
            cap = min(cap, self.settings.heartbeat_interval)
        elif stalled:
            cap = STALLED_BLOCK
        if next_due_us >= 0:
            cap = min(cap, replied + next_due_us / 1e6 - time.monotonic())
        await self._wakeup.wait(cap, idle=room and not stalled)

    def _note_pauses(self, backlogs: Sequence[bytes], pools: Sequence[bytes]) -> None:
        """Log `paused` and `resumed` as intake sees the state change; the first round
        logs what was paused already when this conductor started."""
        for kind, names in (("backlog", backlogs), ("pool", pools)):
            now = frozenset(name.decode() for name in names)
            before = self._paused[kind]
            for name in sorted(now - before):
                self.log.info("paused", **{kind: name})
            for name in sorted(before - now):
                self.log.info("resumed", **{kind: name})
            self._paused[kind] = now

    # --- liveness and recovery (liveness) -----------------------------------

    async def _beat(self) -> None:
        await self._liveness.beat()

    async def _warn_of_no_worker(self) -> None:
        await self._liveness.warn_of_no_worker()

    async def _take_back(self, conductor_id: str, *, forget: bool) -> int:
        return await self._liveness.take_back(conductor_id, forget=forget)

    async def _hand_back(self) -> None:
        await self._liveness.hand_back(self.forwarded)
