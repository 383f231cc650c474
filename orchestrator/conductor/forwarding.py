"""The conductor's routing: the jobs one round took, parsed, routed and forwarded.

Each taken job is parsed (an envelope, or a bare manifest line a producer pushed, which
becomes one here), given its candidate pools (`routing.Router`) and token buckets
(`ratelimits`), serialized as arq's job, and all of them go to `lua/forward.lua` in one
call, which puts each in a pool's arq queue, or back in line, atomically. What cannot
run at all is dead-lettered here; every outcome is one log line.

A rate-limited job is forwarded up to `LEAD` seconds before its instant, due in the
pool's queue at exactly that instant (see forward.lua): the instants are the bucket's,
however late by a timer or a busy core this process is. One further off but within
`PACE_AT_MOST` is *paced*: it stays in the processing list, and the round routes it
again shortly before its instant instead of deferring it a second time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import anyio
import orjson
from pydantic import ValidationError
from pydantic_core import from_json
from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from orchestrator import arq_jobs, tracing
from orchestrator.conductor.ratelimits import RateLimits
from orchestrator.conductor.traces import RoutingTraces
from orchestrator.dispatch.bare_lines import BareJob, BareLineError, envelope_of, is_bare
from orchestrator.job import JOB, Job, mark_paid, priority_of
from orchestrator.keys import Keys
from orchestrator.metrics import Metrics
from orchestrator.receipts import DeadLetter
from orchestrator.registry import task_name_problem
from orchestrator.routing import Router, UnknownPool
from orchestrator.scripts import script
from orchestrator.settings import Settings

# Seconds before its instant a rate-limited job may be forwarded (due then in the
# pool's queue). The event loop's timer wakes on whole milliseconds and late (1 to 2 ms
# with Python 3.11's rounding), a round trip and a busy core add more: within the lead,
# none of that moves an instant. Kept short: a job forwarded early holds its slot early,
# and the forwards' log lines come at most this far ahead of their instants.
LEAD = 0.01
# Why a job this conductor took was no longer in its processing list when routed.
STALE = "recovered by a peer, or cancelled, while this conductor held it"
# A paced job is routed again this long (s) before its instant: the lead, less the
# timer's lateness.
PACE_AHEAD = LEAD - 0.003
# Seconds before its instant a deferred job is taken back into line (forward.lua's
# `early`), to be paced from there: the wake-up, intake and routing all fall before it.
EARLY = 0.025
# Seconds a paid job may be paced in the round (forward.lua's `paced`): with burst 1,
# as many jobs as the bucket is ahead of the round. Further off, a job takes a new
# instant instead.
PACE_AT_MOST = 0.5
# Seconds a round goes on pacing in all, should peers keep taking the instants it
# aims at: then what it still holds takes new instants.
PACE_FOR = 2.0
# Outcomes after which a job is nowhere the conductor's next intake looks: forwarded, or
# refused for good. Any other (deferred, waiting, put back) may be taken again.
SETTLED = frozenset({"forwarded", "duplicate", "unknown_task", "cancelled", "stale"})
# A paced job: its instant, on Redis's clock (s), the job as taken and where it came from.
Paced = tuple[float, bytes, str | None]


class Forwarder:
    """Routes and forwards what one conductor took into its processing list."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        keys: Keys,
        processing: str,
        metrics: Metrics,
        log: FilteringBoundLogger,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.processing = processing
        self.metrics = metrics
        self.log = log
        self.router = Router(settings)
        self.limits = RateLimits(settings)
        # Whether the last `route` left every job it was given where it ends for the
        # conductor (forwarded, or refused for good): none deferred, waiting or put back.
        self.settled = True
        self.forwarded = 0
        self._pool_names = settings.pool_names
        self._forward_keys = [
            processing, keys.ready, keys.deferred, keys.dead,
            keys.batches, keys.no_worker_tasks, keys.paused_pools,
        ]  # fmt: skip
        self._pool_args: list[Any] = []
        for pool in settings.ordered_pools:
            bucket = self.limits.pool_bucket(pool.name)
            self._pool_args += [
                pool.name,
                pool.queue or keys.pool_queue(pool.name),
                pool.max_in_flight or 0,
                bucket.rate if bucket else 0,
                bucket.burst if bucket else 1,
            ]
        self._forward = script(redis, "forward")
        self._dead_letter_script = script(redis, "dead_letter")
        self._traces = RoutingTraces(settings, redis, keys, self.router)

    async def route(
        self, taken: Sequence[bytes], sources: Sequence[str | None], now_ms: int, *, hold: bool
    ) -> float | None:
        """Route the taken jobs; returns when to look again if some could go nowhere yet.

        `hold`: a pool with no live worker holds back the pools after it (see
        forward.lua), while the conductor gives the pools time to announce themselves.
        Paced jobs are routed again, each shortly before its instant, within `PACE_FOR`."""
        self.settled = True
        hold_until, paced = await self._route_once(taken, sources, now_ms, hold, PACE_AT_MOST)
        give_up = time.monotonic() + PACE_FOR
        while paced:
            # Every job whose instant the call, sent PACE_AHEAD before the first's, can
            # forward within the lead goes in it.
            paced.sort(key=lambda held: held[0])
            first = paced[0][0]
            due = [held for held in paced if held[0] <= first + LEAD - PACE_AHEAD]
            paced = paced[len(due) :]
            pace = PACE_AT_MOST if time.monotonic() < give_up else 0.0
            await anyio.sleep(max(first - PACE_AHEAD - time.time(), 0.0))
            more, again = await self._route_once(
                [raw for _, raw, _ in due], [source for _, _, source in due],
                int(time.time() * 1000), hold, pace,
            )  # fmt: skip
            paced += again
            if more is not None:
                hold_until = min(hold_until or math.inf, more)
        return hold_until

    async def _route_once(
        self,
        taken: Sequence[bytes],
        sources: Sequence[str | None],
        now_ms: int,
        hold: bool,
        pace: float,
    ) -> tuple[float | None, list[Paced]]:
        """One call of forward.lua: when to look again (as `route`), and the jobs
        paced."""
        now = now_ms / 1000
        args: list[Any] = [
            self.keys.root,
            now_ms,
            arq_jobs.JOB_KEY_PREFIX,
            arq_jobs.RESULT_KEY_PREFIX,
            arq_jobs.EXPIRES_MS,
            1 if hold else 0,
            pace,
            LEAD,
            EARLY,
            len(self._pool_args) // 5,
            *self._pool_args,
        ]
        routed: list[tuple[Job, Any, bytes, str | None]] = []
        spans: list[Any] = []  # each routed job's span, while tracing
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
            sent_job = job
            if tracing.enabled:
                span = await self._traces.start(job, source)
                spans.append(span)
                sent_job = self._traces.carrying(job, span)  # the worker's run: its child
            try:
                payload = arq_jobs.serialize(sent_job, now_ms)
            except arq_jobs.SerializationError as exc:  # e.g. an int beyond 64 bits
                if tracing.enabled:
                    self._traces.end(spans.pop(), "dead_lettered", "unserializable")
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
            routed.append((job, route, raw, source))
        if not routed:
            return None, []
        sent = time.time()
        reply = await self._forward(keys=self._forward_keys, args=args)
        # How far this process's clock is ahead of Redis's (whose the instants are), at
        # most: the script read its clock after the call was sent, so paced jobs are
        # routed early rather than late by the script's run and the reply.
        ahead = sent - float(reply[-1])
        hold_until: float | None = None
        paced: list[Paced] = []
        for index, (job, route, raw, source) in enumerate(routed):
            outcome, detail = reply[2 * index].decode(), reply[2 * index + 1]
            if outcome == "paced":  # routed again shortly: its span is left unended, unsent
                due = float(detail) / 1000
                paced.append((due + ahead, raw, source))
                self.log.debug("paced", job_id=job["id"], due=due)
                continue
            self._report(job, route, outcome, detail)
            if outcome not in SETTLED:
                self.settled = False
            if tracing.enabled:
                self._traces.routed(spans[index], job, route, outcome, detail)
            if outcome == "full":
                hold_until = min(hold_until or math.inf, now + self.settings.heartbeat_interval)
            elif outcome == "spill_wait":
                hold_until = min(hold_until or math.inf, float(detail) / 1000)
        return hold_until, paced

    def _report(self, job: Job, route: Any, outcome: str, detail: Any) -> None:
        bound = self.log.bind(job_id=job["id"], task=job["task"], batch=job["batch"])
        if outcome == "forwarded":
            pool, _, due = detail.decode().partition(" ")
            reason = route.reason(pool, self.router.first)
            self.forwarded += 1
            self.metrics.routed.labels(pool, reason).inc()
            if reason.endswith("_full_spill"):
                self.metrics.spillovers.labels(pool).inc()
            # `at`: the instant the job is due in the pool's queue (no worker starts it
            # sooner): the call's own, or a rate-limited job's instant up to `LEAD` on;
            # on Redis's clock (the clock rate limits are kept on), to the microsecond.
            bound.info("routed", pool=pool, reason=reason, at=float(due))
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
            bound.warning("stale", reason=STALE)
        elif outcome in ("rate_limited", "pool_rate_limited", "spill_wait"):
            if outcome != "spill_wait":
                self.metrics.deferrals.labels("task" if outcome == "rate_limited" else "pool").inc()
            due = float(detail) / 1000  # on Redis's clock, as the `at` of `routed`
            retry_after = max(due - time.time(), 0.0)
            bound.info(outcome, retry_after=round(retry_after, 3), due=due)
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
        try:
            encoded = orjson.dumps(record)
        except TypeError:  # what made the job unserializable makes its record so too
            record["payload"] = raw.decode(errors="replace")
            encoded = orjson.dumps(record)
        # Only the holder dead-letters (a peer may have recovered the job meanwhile),
        # and out of the processing list and into the dead letters is one step.
        if not await self._dead_letter_script(
            keys=[self.processing, self.keys.dead], args=[raw, encoded]
        ):
            self.log.warning("stale", job_id=record["job_id"], reason=STALE)
            return
        self.metrics.dead_letters.labels(reason).inc()
        self.log.warning("dead_lettered", job_id=record["job_id"], reason=reason, error=error)


def _id_of(raw: bytes) -> str | None:
    """The id of a payload that is not a valid envelope, when it names one: so that
    `verify` and `dlq` can still tell which job it was."""
    try:
        parsed = from_json(raw)  # lenient like the envelope's own parser (NaN, Infinity)
    except ValueError:
        return None
    job_id = parsed.get("id") if isinstance(parsed, dict) else None
    return job_id if isinstance(job_id, str) else None
