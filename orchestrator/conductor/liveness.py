"""The conductor's liveness and recovery: its own heartbeat, and what it does for the
others on each beat.

Each beat renews this conductor's heartbeat and gauges (the backlog depths go to the
dashboard's history too), learns backlogs that appeared,
puts back on the ready list the processing list of a peer whose heartbeat lapsed,
releases the claims of workers that died (`lua/release_dead_workers.lua`), dead-letters
jobs a pool lost (`lua/reap.lua`), and warns of tasks whose jobs wait for a worker. On
stopping, what this conductor took and did not forward goes back to the ready list.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.typing import FilteringBoundLogger

from orchestrator import arq_jobs, history
from orchestrator.keys import Keys, backlog_name
from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.priority import backlog_depths
from orchestrator.scripts import script
from orchestrator.settings import Settings

RELEASE_BATCH = 500
REAP_AGE_MS = 10_000
NO_WORKER_WARN_AFTER = 60.0  # seconds jobs wait for a worker before a warning, repeated
# Seconds a stopping conductor gives its hand-back; LAST_TRY while Redis is known away.
HAND_BACK_WITHIN, LAST_TRY = 3.0, 0.5


class Liveness:
    """One conductor's heartbeat and its recovery of dead peers, workers and jobs.

    `backlogs` is the conductor's own list: a beat appends the backlogs it learns."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        keys: Keys,
        conductor_id: str,
        backlogs: list[str],
        metrics: Metrics,
        log: FilteringBoundLogger,
        outage: RedisOutage,
    ) -> None:
        self.settings = settings
        self.outage = outage
        self.redis = redis
        self.keys = keys
        self.id = conductor_id
        self._backlogs = backlogs
        self.metrics = metrics
        self.log = log
        self._no_worker_warned: dict[str, float] = {}
        # Until then (monotonic), a lapsed heartbeat proves nothing: see `heartbeat_forever`.
        self._judge_after = 0.0
        self._recover = script(redis, "recover")
        self._reaper = script(redis, "reap")
        self._release_dead = script(redis, "release_dead_workers")
        self._release_args: list[Any] = [
            keys.root,
            arq_jobs.IN_PROGRESS_KEY_PREFIX,
            int(arq_jobs.in_progress_timeout(settings.job_timeout) * 1000),
            int(max(5.0, 3 * settings.heartbeat_interval) * 1000),
            RELEASE_BATCH,
            *(
                f"{pool.name}={pool.queue or keys.pool_queue(pool.name)}"
                for pool in settings.ordered_pools
            ),
        ]

    async def heartbeat_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                await self.beat()
            # A full Redis (OOM) refuses the heartbeat as a gone one would: the same wait.
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError) as exc:
                self.outage.failed(exc, during="heartbeat")
                # Redis was away: every heartbeat may have lapsed meanwhile (a restarted
                # Redis keeps their expiry times), the living's too. Peers and workers
                # are judged dead again only once each had a full TTL to beat after it.
                self._judge_after = time.monotonic() + 3 * self.settings.heartbeat_interval
            else:
                self.outage.answered()

    async def beat(self) -> None:
        """Renew this conductor's heartbeat, learn new backlogs, recover dead peers."""
        ttl = max(1, math.ceil(self.settings.heartbeat_interval * 3))
        pools = self.settings.ordered_pools
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.conductor(self.id), time.time(), ex=ttl)
            pipe.sadd(self.keys.conductors, self.id)
            pipe.smembers(self.keys.conductors)
            pipe.smembers(self.keys.backlogs)
            for pool in pools:
                pipe.zcard(self.keys.inflight(pool.name))
                pipe.zcard(pool.queue or self.keys.pool_queue(pool.name))
            _, _, peers, backlogs, *gauges = await pipe.execute()
        # A copy: the doorbell's task may learn a backlog while the depths are read.
        names = list(self._backlogs)
        depths = await backlog_depths(self.redis, self.keys, names)
        self.metrics.beat()
        for name, depth in zip(names, depths, strict=True):
            self.metrics.backlog_depth.labels(name).set(depth)
        await history.note_depths(
            self.redis, self.keys, dict(zip(names, depths, strict=True)), time.time()
        )
        for index, pool in enumerate(pools):
            in_flight, queued = gauges[2 * index : 2 * index + 2]
            self.metrics.in_flight.labels(pool.name).set(in_flight)
            self.metrics.queue_depth.labels(pool.name).set(queued)
        self.learn_backlogs(backlogs)
        if time.monotonic() < self._judge_after:
            await self.warn_of_no_worker()
            return
        for peer in sorted(p.decode() for p in peers):
            if peer != self.id and not await self.redis.exists(self.keys.conductor(peer)):
                moved = await self.take_back(peer, forget=True)
                if moved:
                    self.metrics.recovered.inc(moved)
                    self.log.warning("recovered", peer=peer, jobs=moved)
        await self.reap()
        await self.warn_of_no_worker()

    def learn_backlogs(self, names: Iterable[bytes]) -> None:
        """Add the backlogs of the `backlogs` set not known yet to this conductor's list."""
        known = set(self._backlogs)
        for name in sorted(b.decode() for b in names):
            if name not in known:
                self._backlogs.append(backlog_name(name))
                self.log.info("backlog_found", backlog=name)

    async def warn_of_no_worker(self) -> None:
        """A warning a minute for each task whose jobs wait for a worker that runs it."""
        waiting = await self.redis.zrange(self.keys.no_worker_tasks, 0, -1, withscores=True)
        now = time.time()
        for member, since_ms in waiting:
            name = member.decode()
            waited = now - since_ms / 1000
            last = self._no_worker_warned.get(name, 0.0)
            if waited >= NO_WORKER_WARN_AFTER and now - last >= NO_WORKER_WARN_AFTER:
                self._no_worker_warned[name] = now
                task, _, pool = name.partition("@")
                jobs = await self.redis.llen(self.keys.no_worker(name))  # type: ignore[misc]
                self.log.warning(
                    "no_worker", task=task, pool=pool or None, jobs=jobs,
                    waited=round(waited), hint=f"start a worker that runs {task}"
                    + (f" in pool {pool}" if pool else ""),
                )  # fmt: skip

    async def reap(self) -> None:
        freed, _ = await self._release_dead(keys=[self.keys.holders], args=self._release_args)
        if freed:
            self.log.warning("worker_lost", jobs=[job.decode() for job in freed], action="rerun")
        now_ms = int(time.time() * 1000)
        for pool in self.settings.ordered_pools:
            lost = await self._reaper(
                keys=[self.keys.inflight(pool.name), self.keys.dead, self.keys.events],
                args=[arq_jobs.JOB_KEY_PREFIX, self.keys.root, REAP_AGE_MS, now_ms, pool.name],
            )
            for job_id in lost:
                self.metrics.dead_letters.labels("lost").inc()
                self.log.warning(
                    "dead_lettered", job_id=job_id.decode(), pool=pool.name, reason="lost"
                )

    async def take_back(self, conductor_id: str, *, forget: bool) -> int:
        keys = [
            self.keys.processing(conductor_id),
            self.keys.ready,
            self.keys.conductors,
            self.keys.conductor(conductor_id),
            self.keys.doorbell,
        ]
        args = [conductor_id, "forget" if forget else "keep"]
        return int(await self._recover(keys=keys, args=args))

    async def hand_back(self, forwarded: int) -> None:
        """Stopping: what this conductor took and did not forward goes back to ready.

        Within `HAND_BACK_WITHIN` seconds (a short try when Redis is known away): what a
        Redis that does not answer keeps on this conductor's processing list is put back
        by a peer once this conductor's heartbeat lapsed, so the stop need not wait."""
        within = LAST_TRY if self.outage.down else HAND_BACK_WITHIN
        error = f"no reply within {within:g} s"
        with anyio.move_on_after(within, shield=True):
            try:
                moved = await self.take_back(self.id, forget=False)
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError) as exc:
                error = " ".join(str(exc).split()) or type(exc).__name__
            else:
                self.log.info("conductor_stopped", forwarded=forwarded, handed_back=moved)
                return
        self.log.warning(
            "conductor_stopped", forwarded=forwarded, handed_back=0, error=error,
            hint="what it held goes back in line when a conductor sees its heartbeat lapse",
        )  # fmt: skip
