"""The scaler: launches a pool's workers while the pools before it are full, releases
them when idle, and keeps the day's spend within the pool's budget.

It runs inside every conductor, but only the holder of a Redis lease acts (renewed each
tick, taken over by another conductor within its TTL when the holder dies), so three
conductors never launch three times for one need. Each tick, for each pool that has a
`scaler` in its settings, it reads the pool's demand and workers from Redis, asks the
policy (`policy.decide`) what to do, and does it through the pool's provider
(`providers`). Every decision is one JSON log line with its reason and numbers:
`scale_up`, `scale_down`, `launch_failed`, `budget_reached`; and `worker_booted` when a
launch's first heartbeat arrives (its boot time).

Its reads of Redis — a pool's launches, workers and demand — are in `reads`.

Launch records (`launches.Launch`), the spend of the day and the last decision
(`Keys.scaler_state`) are kept in Redis for `status`, `verify`, `demo` and the next
leader.

It stays one module over 300 lines because launching, following launches, counting
spend and publishing state all act on one pool's memory within one tick under the lease.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator import history, tracing
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.pools import PoolSettings, ScalerSettings
from orchestrator.scaling.launches import KEEP_SECONDS, LIVE, Launch, day
from orchestrator.scaling.policy import Plan, View, Worker, backoff, decide
from orchestrator.scaling.providers import LaunchError, LocalProvider, Provider, provider_for
from orchestrator.scaling.reads import PoolReads
from orchestrator.scripts import script
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.scaler")
TICK = 0.5  # seconds between looks
LEASE_TTL_MS = 3000  # a dead holder's lease lapses within this
STATE_TTL = 30  # seconds the last decision outlives a scaler that stopped


@dataclass
class _Memory:
    """What the leader remembers of a pool between ticks (a new leader starts afresh)."""

    pressure_since: float | None = None
    failures: int = 0
    backoff_until: float = 0.0
    last_tick: float | None = None
    budget_said: bool = False
    last: dict[str, Any] = field(default_factory=dict)


class Scaler:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        conductor_id: str,
        metrics: Metrics,
        outage: RedisOutage | None = None,
    ) -> None:
        self.settings = settings
        # The conductor's: one warning an outage for the process, not one a tick.
        self.outage = outage or RedisOutage(log)
        self.redis = redis
        self.id = conductor_id
        self.metrics = metrics
        self.keys = Keys(settings.namespace)
        self.reads = PoolReads(settings, redis, self.keys)
        self.pools = [p for p in settings.ordered_pools if p.scaler is not None]
        self.providers: dict[str, Provider] = {
            p.name: provider_for(settings, p.name, p.scaler) for p in self.pools if p.scaler
        }
        self._memory = {p.name: _Memory() for p in self.pools}
        self._lease = script(redis, "lease")
        self.leading = False

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                for provider in self.providers.values():
                    tasks.start_soon(provider.run)
                while True:
                    try:
                        await self._tick()
                    except (RedisError, OSError) as exc:
                        self.outage.failed(exc, during="scaler")
                        self.leading = False
                    await anyio.sleep(TICK)
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop()

    async def _tick(self) -> None:
        leading = bool(
            await self._lease(keys=[self.keys.scaler_lease], args=[self.id, LEASE_TTL_MS])
        )
        if leading != self.leading:
            log.info("scaler_lead" if leading else "scaler_lead_lost", conductor=self.id)
            self.leading = leading
            for memory in self._memory.values():
                memory.last_tick = None  # spend is counted from the next tick on
        for provider in self.providers.values():
            if isinstance(provider, LocalProvider):
                provider.reap()
        if leading:
            for pool in self.pools:
                await self._tick_pool(pool)

    async def hurry(self) -> None:
        for provider in self.providers.values():
            await provider.hurry()

    async def _stop(self) -> None:
        for provider in self.providers.values():
            await provider.shutdown()  # done already by a provider's `run` when it stopped
        if self.leading:  # else, or when Redis does not answer, it lapses by itself
            with anyio.move_on_after(LEASE_TTL_MS / 1000), suppress(RedisError, OSError):
                await self._lease(keys=[self.keys.scaler_lease], args=[self.id, 0])

    # --- one pool, one tick -----------------------------------------------------------

    async def _tick_pool(self, pool: PoolSettings) -> None:
        config = pool.scaler
        assert config is not None
        memory = self._memory[pool.name]
        now = time.time()
        launches = await self.reads.launches(pool.name)
        workers = await self.reads.workers(pool.name)
        await self._follow_launches(pool.name, config, launches, workers, now, memory)
        spend = await self._accrue(pool.name, config, launches, now, memory)
        launched_workers = {r["worker"] for r in launches.values() if r["worker"]}
        released = await self.reads.released(pool.name)
        live = tuple(
            Worker(
                id=w["worker"], slots=int(w.get("slots") or 0), running=int(w.get("running") or 0),
                idle_since=float(w["idle_since"]) if w.get("idle_since") else None,
                draining=bool(w.get("draining")) or w["worker"] in released,
                # a platform's workers are all the scaler's: it restarts a released one
                # as a new worker, and picks itself which one a lower count stops
                launched=bool(w.get("launch")) or w["worker"] in launched_workers
                or config.provider == "command",
            )
            for w in workers
        )  # fmt: skip
        launching = sum(1 for r in launches.values() if r["state"] == "launching")
        demand = await self.reads.demand(pool, now)
        capacity = (len([w for w in live if not w.draining]) + launching) * config.slots_per_worker
        if demand > capacity:
            memory.pressure_since = memory.pressure_since or now
        else:
            memory.pressure_since = None
        view = View(
            now=now, demand=demand, workers=live, launching=launching,
            recent_launches=tuple(r["launched_at"] for r in launches.values()
                                  if now - r["launched_at"] < max(60.0, 60 / config.launch_rate)),
            spend_today=spend, pressure_since=memory.pressure_since,
            backoff_until=memory.backoff_until,
        )  # fmt: skip
        plan = decide(config, view)
        started = time.time()
        decision = await self._apply(pool.name, config, plan, view, memory)
        if tracing.enabled and decision != "hold":
            _trace_decision(pool.name, decision, plan, view, started)
        await self._publish_state(pool.name, config, plan, view, decision, memory)

    async def _apply(
        self, pool: str, config: ScalerSettings, plan: Plan, view: View, memory: _Memory
    ) -> str:
        """Do what the plan says; returns the decision to show (`hold` when nothing)."""
        numbers = {
            "pool": pool, "demand": view.demand, "target": plan.target,
            "workers": len([w for w in view.workers if not w.draining]),
            "launching": view.launching, "spend_today": round(view.spend_today, 6),
        }  # fmt: skip
        decision = "hold"
        if plan.launch > 0:
            decision = await self._launch(pool, config, plan, numbers, memory)
        if plan.budget_reached and not memory.budget_said:
            memory.budget_said = True
            log.warning(
                "budget_reached", budget=config.budget_per_day, reason=plan.reason,
                action="no launches; jobs wait for the pools before it", **numbers,
            )  # fmt: skip
        elif not plan.budget_reached:
            memory.budget_said = False
        if plan.budget_reached and decision == "hold":
            decision = "budget_reached"
        for worker_id in plan.release:
            await self._release(pool, worker_id, plan, numbers)
            decision = "scale_down"
        return decision

    async def _launch(
        self,
        pool: str,
        config: ScalerSettings,
        plan: Plan,
        numbers: dict[str, Any],
        memory: _Memory,
    ) -> str:
        now = time.time()
        ids = [f"{pool}-{uuid.uuid4().hex[:10]}" for _ in range(plan.launch)]
        records = {
            launch_id: Launch(
                launch_id=launch_id, pool=pool, provider=config.provider, state="launching",
                launched_at=now, booted_at=None, released_at=None, ended_at=None,
                worker=None, error=None,
            )
            for launch_id in ids
        }  # fmt: skip
        await self._save(pool, records.values())
        target = numbers["workers"] + numbers["launching"] + plan.launch
        try:
            await self.providers[pool].launch(ids, target)
        except LaunchError as exc:
            memory.failures += 1
            retry_in = backoff(memory.failures)
            memory.backoff_until = time.time() + retry_in
            for record in records.values():
                record.update({"state": "failed", "error": str(exc), "ended_at": time.time()})
            await self._save(pool, records.values())
            self.metrics.pool_launches.labels(pool, "failed").inc(len(ids))
            log.warning("launch_failed", error=str(exc), retry_in=retry_in, launches=ids, **numbers)
            return "launch_failed"
        self.metrics.pool_launches.labels(pool, "launched").inc(len(ids))
        log.info("scale_up", launches=ids, reason=plan.reason, **numbers)
        return "scale_up"

    async def _release(
        self, pool: str, worker_id: str, plan: Plan, numbers: dict[str, Any]
    ) -> None:
        await self.redis.sadd(self.keys.release(pool), worker_id)  # type: ignore[misc]
        launches = await self.reads.launches(pool)
        for record in launches.values():
            if record["worker"] == worker_id and record["state"] == "active":
                record.update({"state": "draining", "released_at": time.time()})
                await self._save(pool, [record])
        log.info("scale_down", worker=worker_id, reason=plan.reason, **numbers)
        try:
            await self.providers[pool].release(worker_id, plan.target)
        except LaunchError as exc:
            log.warning("release_failed", pool=pool, worker=worker_id, error=str(exc))

    # --- launch records, spend and state ------------------------------------------------

    async def _save(self, pool: str, records: Any) -> None:
        mapping = {r["launch_id"]: orjson.dumps(r) for r in records}
        if mapping:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.launches(pool), mapping=mapping)
                pipe.expire(self.keys.launches(pool), KEEP_SECONDS)
                await pipe.execute()

    async def _follow_launches(
        self,
        pool: str,
        config: ScalerSettings,
        launches: dict[str, Launch],
        workers: list[dict[str, str]],
        now: float,
        memory: _Memory,
    ) -> None:
        """Match heartbeats to launches (boot), fail launches past boot_timeout, and mark
        gone the ones whose worker left."""
        live = {w["worker"]: w for w in workers}
        by_launch = {w["launch"]: w["worker"] for w in workers if w.get("launch")}
        claimed = {r["worker"] for r in launches.values() if r["worker"]}
        # A command provider's workers may not carry the launch id: they answer the
        # oldest launches in turn.
        strangers = [w for w in live if w not in claimed and not live[w].get("launch")]
        changed: list[Launch] = []
        for record in sorted(launches.values(), key=lambda r: r["launched_at"]):
            if record["state"] == "launching":
                worker = by_launch.get(record["launch_id"])
                if worker is None and config.provider == "command" and strangers:
                    worker = strangers.pop(0)
                if worker is not None:
                    record.update({"state": "active", "worker": worker, "booted_at": now})
                    memory.failures = 0
                    self.metrics.pool_launches.labels(pool, "booted").inc()
                    log.info(
                        "worker_booted", pool=pool, launch_id=record["launch_id"], worker=worker,
                        boot_seconds=round(now - record["launched_at"], 3),
                    )  # fmt: skip
                elif now - record["launched_at"] > config.boot_timeout:
                    error = f"no heartbeat within boot_timeout ({config.boot_timeout:g} s)"
                    record.update({"state": "failed", "error": error, "ended_at": now})
                    memory.failures += 1
                    retry_in = backoff(memory.failures)
                    memory.backoff_until = now + retry_in
                    await self.providers[pool].abandon(record["launch_id"])
                    self.metrics.pool_launches.labels(pool, "failed").inc()
                    log.warning(
                        "launch_failed", pool=pool, launch_id=record["launch_id"], error=error,
                        retry_in=retry_in,
                    )  # fmt: skip
                else:
                    continue
                changed.append(record)
            elif record["state"] in ("active", "draining") and record["worker"] not in live:
                record.update({"state": "gone", "ended_at": now})
                record["released_at"] = record["released_at"] or now
                changed.append(record)
        stale = [
            lid for lid, r in launches.items()
            if r["state"] in ("gone", "failed") and now - (r["ended_at"] or now) > KEEP_SECONDS
        ]  # fmt: skip
        await self._save(pool, changed)
        if stale:
            await self.redis.hdel(self.keys.launches(pool), *stale)  # type: ignore[misc]

    async def _accrue(
        self,
        pool: str,
        config: ScalerSettings,
        launches: dict[str, Launch],
        now: float,
        memory: _Memory,
    ) -> float:
        """Add the money the pool's paid workers cost since the last tick; today's spend."""
        key = self.keys.spend(pool, day(now))
        paid = sum(1 for r in launches.values() if r["state"] in LIVE)
        elapsed = 0.0 if memory.last_tick is None else max(0.0, now - memory.last_tick)
        memory.last_tick = now
        cost = paid * config.price_per_worker_hour / 3600 * elapsed
        if cost > 0:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, cost)
                pipe.expire(key, KEEP_SECONDS)
                history.stage_spend(pipe, self.keys, pool, cost, now)
                total, *_ = await pipe.execute()
            self.metrics.pool_spend.labels(pool).inc(cost)
            return float(total)
        return float(await self.redis.get(key) or 0.0)

    async def _publish_state(
        self,
        pool: str,
        config: ScalerSettings,
        plan: Plan,
        view: View,
        decision: str,
        memory: _Memory,
    ) -> None:
        now = view.now
        serving = [w for w in view.workers if not w.draining]
        state = {
            "demand": view.demand, "target": plan.target, "launching": view.launching,
            "active": sum(1 for w in serving if w.running > 0),
            "idle": sum(1 for w in serving if w.running == 0),
            "draining": sum(1 for w in view.workers if w.draining),
            "spend_today": f"{view.spend_today:.6f}",
            "budget": "" if config.budget_per_day is None else f"{config.budget_per_day:g}",
            "budget_reached": "1" if plan.budget_reached else "0",
            "price": f"{config.price_per_worker_hour:g}", "leader": self.id,
        }  # fmt: skip
        if decision != "hold" or not memory.last:
            memory.last = {"decision": decision, "reason": plan.reason, "at": f"{now:.3f}"}
        for name in ("launching", "active", "idle", "draining"):
            self.metrics.pool_workers.labels(pool, name).set(float(str(state[name])))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.scaler_state(pool), mapping={**state, **memory.last})
            pipe.expire(self.keys.scaler_state(pool), STATE_TTL)
            await pipe.execute()


def _trace_decision(pool: str, decision: str, plan: Plan, view: View, started: float) -> None:
    """A decision that changed something is a span of its own (`scale {pool}`), its event
    named as the log line (`scale_up`, `scale_down`, `launch_failed`, `budget_reached`),
    so that a slow spill can be read off the traces beside the jobs that waited for it."""
    attributes = {
        "orchestrator.pool": pool, "orchestrator.decision": decision,
        "orchestrator.reason": plan.reason, "orchestrator.demand": view.demand,
        "orchestrator.target": plan.target, "orchestrator.launching": view.launching,
        "orchestrator.spend_today": round(view.spend_today, 6),
    }  # fmt: skip
    with tracing.span(f"scale {pool}", attributes=attributes, start_time=started) as span:
        span.add_event(decision, {"orchestrator.reason": plan.reason})
        if decision == "launch_failed":
            tracing.ended(span, decision, "launch_failed")
