"""The conductor: takes jobs off the backlogs and forwards them to the pools' arq queues.

One round is two scripts. The first (`lua/intake.lua`) releases deferred jobs that are
due, puts back in line the jobs that waited for a worker running their task once one
announces it, reads the pools' free slots and takes at most that many jobs (ready jobs
first, then jobs waiting for a pool that has room, then the backlogs' priority levels,
highest first, each level's backlogs in their configured order; paused backlogs not at
all, paused pools counted full) into this conductor's processing list; the second
(`lua/forward.lua`) routes them all atomically, to pools whose live workers announce
the job's task. The conductor holds no task code: the workers' heartbeats say what
exists. With no free slot it waits for a worker to announce one; with nothing to do it
blocks in Redis on a `BLMOVE`, so idle costs nothing. A job is always in exactly one
Redis structure — a backlog, a processing list, an arq queue, the deferred set, a
waiting list (for a full pool, or for a worker that runs its task) or the dead letters
— so a conductor that dies loses nothing: a peer sees its heartbeat lapse and puts its
processing list back on the ready list. Bare manifest lines a producer pushed become
envelopes here (`bare_lines`).
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import orjson
import structlog
from pydantic import ValidationError
from pydantic_core import from_json
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import arq_jobs
from orchestrator.bare_lines import BareJob, BareLineError, envelope_of, is_bare
from orchestrator.connection import on_messages
from orchestrator.job import JOB, Job, mark_paid, priority_of
from orchestrator.keys import Keys, backlog_name
from orchestrator.metrics import Metrics
from orchestrator.priority import backlog_depths, level_separator
from orchestrator.ratelimits import RateLimits
from orchestrator.receipts import DeadLetter
from orchestrator.registry import task_name_problem
from orchestrator.routing import Router, UnknownPool
from orchestrator.scaler import Scaler
from orchestrator.scripts import script
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.conductor")
RELEASE_BATCH = 500
MAX_BACKOFF = 5.0
STALLED_BLOCK = 0.25  # seconds; see _round
REAP_AGE_MS = 10_000
NO_WORKER_WARN_AFTER = 60.0  # seconds jobs wait for a worker before a warning, repeated


class Conductor:
    def __init__(self, settings: Settings, redis: Redis, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.redis = redis
        # Until then a pool with no live worker holds back the pools after it (see
        # forward.lua): at start-up every pool gets one heartbeat interval to announce.
        self._hold_until = time.monotonic() + settings.heartbeat_interval
        self._no_worker_warned: dict[str, float] = {}
        self._pool_names = settings.pool_names
        self.keys = Keys(settings.namespace)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.processing = self.keys.processing(self.id)
        self._forward_keys = [
            self.processing, self.keys.ready, self.keys.deferred, self.keys.dead,
            self.keys.batches, self.keys.no_worker_tasks, self.keys.paused_pools,
        ]  # fmt: skip
        self.router = Router(settings)
        self.limits = RateLimits(settings)
        self.slots_freed = anyio.Event()
        self.forwarded = 0
        self._backlogs: list[str] = list(settings.backlogs)
        self._pool_args: list[Any] = []
        for pool in settings.ordered_pools:
            bucket = self.limits.pool_bucket(pool.name)
            self._pool_args += [
                pool.name,
                pool.queue or self.keys.pool_queue(pool.name),
                pool.max_in_flight or 0,
                bucket.rate if bucket else 0,
                bucket.burst if bucket else 1,
            ]
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
        self._levels_seen = False  # some backlog has had jobs on levels other than 0
        self._paused: dict[str, frozenset[str]] = {"backlog": frozenset(), "pool": frozenset()}
        self._forward = script(redis, "forward")
        self._intake = script(redis, "intake")
        self._recover = script(redis, "recover")
        self._reaper = script(redis, "reap")
        self._release_dead = script(redis, "release_dead_workers")
        self._release_args: list[Any] = [
            self.keys.root,
            arq_jobs.IN_PROGRESS_KEY_PREFIX,
            int(arq_jobs.in_progress_timeout(settings.job_timeout) * 1000),
            int(max(5.0, 3 * settings.heartbeat_interval) * 1000),
            RELEASE_BATCH,
            *(
                f"{pool.name}={pool.queue or self.keys.pool_queue(pool.name)}"
                for pool in settings.ordered_pools
            ),
        ]
        self.log = log.bind(conductor=self.id)

    async def run(self, *, stop: anyio.Event | None = None) -> None:
        """Conduct until `stop` is set (or the task is cancelled), then hand back what
        this conductor holds."""
        stop = stop or anyio.Event()
        self.log.info("conductor_started", backlogs=self._backlogs)
        try:
            await self._beat()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._heartbeat_forever)
                tasks.start_soon(self._listen_for_slots)
                tasks.start_soon(self._conduct)
                if any(pool.scaler for pool in self.settings.pools):
                    tasks.start_soon(Scaler(self.settings, self.redis, self.id, self.metrics).run)
                await stop.wait()
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._hand_back()

    # --- the main loop ----------------------------------------------------------------

    async def _conduct(self) -> None:
        backoff = 0.1
        owe_hand_back = False
        while True:
            try:
                if owe_hand_back:
                    # A round broke off with jobs taken and not routed (the forward is
                    # atomic, so none of them went anywhere): put them back in line.
                    await self._take_back(self.id, forget=False)
                    owe_hand_back = False
                await self._round()
                backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.log.warning("redis_unavailable", error=str(exc), retry_in=backoff)
                owe_hand_back = True
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except ResponseError as exc:
                # A script refused (a bug, or a server without a needed command): keep
                # the jobs where they are, say so loudly, and try again later.
                self.log.error("redis_error", error=str(exc), retry_in=MAX_BACKOFF)
                owe_hand_back = True
                await anyio.sleep(MAX_BACKOFF)

    async def _round(self) -> None:
        backlogs = [
            part
            for name in self._backlogs
            for part in (name, self.keys.backlog(name), self.keys.backlog_levels(name))
        ]
        reply = await self._intake(keys=self._intake_keys, args=[*self._intake_args, *backlogs])
        taken, next_due_ms, free, stalled, now_ms, origins, levels, *paused = reply
        self._levels_seen = self._levels_seen or levels > 0
        self._note_pauses(*paused)
        wait_cap = self.settings.idle_block if next_due_ms < 0 else max(next_due_ms / 1000, 0.001)
        if not taken:
            if sum(max(int(n), 0) for n in free) <= 0:
                await self._wait_for_slots(min(wait_cap, self.settings.heartbeat_interval))
                return
            # Jobs wait for a pool that is full while another idles: watch the backlog
            # only briefly, so a freed slot of the full pool is not left unused.
            taken, origin = await self._block_for_work(
                min(wait_cap, STALLED_BLOCK) if stalled else wait_cap
            )
            origins = [origin] * len(taken)
            now_ms = int(time.time() * 1000)
        if taken:
            self.log.debug("intake", jobs=len(taken))
            sources = [self._backlogs[n - 1] if n > 0 else None for n in origins]
            hold_until = await self._route(taken, sources, int(now_ms))
            if hold_until is not None:
                # Some jobs could go nowhere yet and went back to the head of the line:
                # taking them again at once would spin. Wait for a slot or their time.
                await self._wait_for_slots(max(hold_until - time.time(), 0.001))

    async def _block_for_work(self, wait_cap: float) -> tuple[list[bytes], int]:
        """Idle: wait inside Redis for the first backlog not paused to receive a job at
        level 0; returns it (if any) and that backlog's 1-based index.

        One BLMOVE watches one list, so while there are others — more backlogs, levels
        other than 0 (once seen, a batch of another level may come at any time) — or
        something is paused (a resume may come at any time), the wait is kept short
        enough for intake to look at everything again soon.
        """
        timeout = min(wait_cap, self.settings.idle_block)
        paused = self._paused["backlog"]
        if len(self._backlogs) > 1 or self._levels_seen or paused or self._paused["pool"]:
            timeout = min(timeout, 1.0)  # a full fix, watching every list, is another issue's
        watched = [n for n, name in enumerate(self._backlogs, 1) if name not in paused]
        if not watched:  # every backlog paused: `resume` publishes on the events channel
            await self._wait_for_slots(timeout)
            return [], 0
        source = self.keys.backlog(self._backlogs[watched[0] - 1])
        # redis-py types the timeout as int; Redis 6+ takes fractions of a second.
        seconds: Any = max(timeout, 0.01)
        job = await self.redis.blmove(source, self.processing, seconds, "LEFT", "RIGHT")
        return ([job] if job is not None else []), watched[0]

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

    async def _wait_for_slots(self, at_most: float) -> None:
        with anyio.move_on_after(at_most):
            await self.slots_freed.wait()
        self.slots_freed = anyio.Event()

    # --- routing ----------------------------------------------------------------------

    async def _route(
        self, taken: Sequence[bytes], sources: Sequence[str | None], now_ms: int
    ) -> float | None:
        """Route the taken jobs; returns when to look again if some could go nowhere yet."""
        now = now_ms / 1000
        args: list[Any] = [
            self.keys.root,
            now_ms,
            arq_jobs.JOB_KEY_PREFIX,
            arq_jobs.RESULT_KEY_PREFIX,
            arq_jobs.EXPIRES_MS,
            1 if time.monotonic() < self._hold_until else 0,
            len(self._pool_args) // 5,
            *self._pool_args,
        ]
        routed: list[tuple[Job, Any]] = []
        for raw, source in zip(taken, sources, strict=True):
            parsed = await self._parse(raw, source, now)
            if parsed is None:
                continue
            job, envelope, adhoc = parsed
            try:
                route = self.router.route(job, now)
            except UnknownPool as exc:
                await self._dead_letter(raw, job, "unknown_pool", str(exc))
                continue
            buckets = self.limits.job_buckets(job)
            paid = bool(job.get("rate_paid"))
            try:
                payload = arq_jobs.serialize(job, now_ms)
            except arq_jobs.SerializationError as exc:  # e.g. an int beyond 64 bits
                await self._dead_letter(raw, job, "unserializable", str(exc))
                continue
            args += [
                job["task"],
                envelope,
                adhoc.batch if adhoc else "",
                adhoc.backlog if adhoc else "",
                raw,
                job["id"],
                self.keys.arq_job_id(job["id"]),
                payload,
                ",".join(route.candidates),
                buckets,
                envelope if paid or not buckets else mark_paid(envelope),
                1 if route.pinned else 0,
                route.spill_at_ms,
                1 if paid else 0,
                job["batch"],
                arq_jobs.queue_score(now_ms, priority_of(job)),
            ]
            routed.append((job, route))
        if not routed:
            return None
        reply = await self._forward(keys=self._forward_keys, args=args)
        hold_until: float | None = None
        for index, (job, route) in enumerate(routed):
            outcome, detail = reply[2 * index].decode(), reply[2 * index + 1]
            self._report(job, route, outcome, detail)
            if outcome == "full":
                hold_until = min(hold_until or math.inf, now + self.settings.heartbeat_interval)
            elif outcome == "spill_wait":
                hold_until = min(hold_until or math.inf, int(detail) / 1000)
        return hold_until

    def _report(self, job: Job, route: Any, outcome: str, detail: Any) -> None:
        bound = self.log.bind(job_id=job["id"], task=job["task"], batch=job["batch"])
        if outcome == "forwarded":
            pool = detail.decode()
            reason = route.reason(pool, self.router.first)
            self.forwarded += 1
            self.metrics.routed.labels(pool, reason).inc()
            if reason.endswith("_full_spill"):
                self.metrics.spillovers.labels(pool).inc()
            bound.info("routed", pool=pool, reason=reason)
            bound.debug("forwarded", pool=pool)
        elif outcome == "duplicate" and not detail:
            bound.info("duplicate", reason="a producer sent this job id for this batch before")
        elif outcome == "duplicate":
            bound.info("duplicate", pool=detail.decode(), reason="arq already holds this job id")
        elif outcome == "unknown_task":
            self.metrics.dead_letters.labels("unknown_task").inc()
            bound.warning("dead_lettered", reason="unknown_task", error="no live worker runs it")
        elif outcome == "cancelled":
            bound.info("cancelled", reason="its batch or the job was cancelled")
        elif outcome == "stale":
            bound.warning(
                "stale", reason="recovered by a peer, or cancelled, while this conductor held it"
            )
        elif outcome in ("rate_limited", "pool_rate_limited", "spill_wait"):
            if outcome != "spill_wait":
                self.metrics.deferrals.labels("task" if outcome == "rate_limited" else "pool").inc()
            retry_after = max(int(detail) / 1000 - time.time(), 0.0)
            bound.info(outcome, retry_after=round(retry_after, 3))
        elif outcome == "waiting":
            bound.info("waiting", pool=detail.decode(), reason=f"{route.kind}: pool full")
        elif outcome == "no_worker":
            task, _, pool = detail.decode().partition("@")
            where = f"in pool {pool}" if pool else "in any pool"
            bound.info("no_worker", pool=pool or None, reason=f"no live worker {where} runs {task}")
        else:
            bound.debug("requeued", reason="every pool full")
        if unknown := self.limits.unknown(job):
            bound.warning("unknown_rate_limit", names=unknown)

    async def _parse(
        self, raw: bytes, source: str | None, now: float
    ) -> tuple[Job, bytes, BareJob | None] | None:
        """The envelope (parsed and as stored) and, for a bare manifest line a producer
        pushed, the batch it joins; None after dead-lettering what cannot run."""
        try:
            job = JOB.validate_json(raw)
        except ValidationError as exc:
            if is_bare(raw):
                try:
                    bare = envelope_of(raw, source, self._pool_names, now=now)
                except BareLineError as refused:
                    await self._dead_letter(raw, None, "invalid_payload", str(refused))
                    return None
                return bare.job, bare.envelope, bare
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in error["loc"]) or "payload"
            await self._dead_letter(raw, None, "invalid_payload", f"{where}: {error['msg']}")
            return None
        # Which tasks exist is for the workers to say (their heartbeats); a name that no
        # worker could ever announce is not a job.
        if problem := task_name_problem(job["task"]):
            await self._dead_letter(raw, job, "invalid_payload", f"task: {problem}")
            return None
        return job, raw, None

    async def _dead_letter(self, raw: bytes, job: Job | None, reason: str, error: str) -> None:
        payload: Any = job if job is not None else raw.decode(errors="replace")
        record = DeadLetter(
            job_id=job["id"] if job else _id_of(raw),
            reason=reason,
            error=error,
            at=time.time(),
            payload=payload,
        )
        # Only the holder dead-letters: a peer may have recovered the job meanwhile.
        if not await self.redis.lrem(self.processing, 1, raw):  # type: ignore[arg-type,misc]
            return
        try:
            encoded = orjson.dumps(record)
        except TypeError:  # what made the job unserializable makes its record so too
            record["payload"] = raw.decode(errors="replace")
            encoded = orjson.dumps(record)
        await self.redis.rpush(self.keys.dead, encoded)  # type: ignore[misc]
        self.metrics.dead_letters.labels(reason).inc()
        self.log.warning("dead_lettered", job_id=record["job_id"], reason=reason, error=error)

    # --- liveness and recovery --------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                await self._beat()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.log.warning("heartbeat_failed", error=str(exc))

    async def _beat(self) -> None:
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
        depths = await backlog_depths(self.redis, self.keys, self._backlogs)
        self.metrics.beat()
        for name, depth in zip(self._backlogs, depths, strict=True):
            self.metrics.backlog_depth.labels(name).set(depth)
        for index, pool in enumerate(pools):
            in_flight, queued = gauges[2 * index : 2 * index + 2]
            self.metrics.in_flight.labels(pool.name).set(in_flight)
            self.metrics.queue_depth.labels(pool.name).set(queued)
        known = set(self._backlogs)
        for name in sorted(b.decode() for b in backlogs):
            if name not in known:
                self._backlogs.append(backlog_name(name))
                self.log.info("backlog_found", backlog=name)
        for peer in sorted(p.decode() for p in peers):
            if peer != self.id and not await self.redis.exists(self.keys.conductor(peer)):
                moved = await self._take_back(peer, forget=True)
                if moved:
                    self.metrics.recovered.inc(moved)
                    self.log.warning("recovered", peer=peer, jobs=moved)
        await self._reap()
        await self._warn_of_no_worker()

    async def _warn_of_no_worker(self) -> None:
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

    async def _reap(self) -> None:
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

    async def _take_back(self, conductor_id: str, *, forget: bool) -> int:
        keys = [
            self.keys.processing(conductor_id),
            self.keys.ready,
            self.keys.conductors,
            self.keys.conductor(conductor_id),
        ]
        args = [conductor_id, "forget" if forget else "keep"]
        return int(await self._recover(keys=keys, args=args))

    async def _hand_back(self) -> None:
        """Stopping: what this conductor took and did not forward goes back to ready."""
        try:
            moved = await self._take_back(self.id, forget=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.log.warning("stop_without_hand_back", error=str(exc))
            return
        self.log.info("conductor_stopped", forwarded=self.forwarded, handed_back=moved)

    async def _listen_for_slots(self) -> None:
        """Wake the loop when a worker announces freed slots (a job ended, a worker came).

        `_wait_for_slots` replaces the event after each wait, so this hands over a view
        that always sets the current one."""
        await on_messages(self.redis, self.keys.events, _Current(self))


class _Current:
    def __init__(self, conductor: Conductor) -> None:
        self._conductor = conductor

    def set(self) -> None:
        self._conductor.slots_freed.set()


def _id_of(raw: bytes) -> str | None:
    """The id of a payload that is not a valid envelope, when it names one: so that
    `verify` and `dlq` can still tell which job it was."""
    try:
        parsed = from_json(raw)  # lenient like the envelope's own parser (NaN, Infinity)
    except ValueError:
        return None
    job_id = parsed.get("id") if isinstance(parsed, dict) else None
    return job_id if isinstance(job_id, str) else None
