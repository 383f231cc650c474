"""Prometheus metrics of the conductor and the workers, on one registry per process.

Counters are bumped where the decision is made; gauges that mirror Redis (backlog
depth, jobs in flight, arq queue depth) are refreshed by the conductor's heartbeat, so a
scrape costs no Redis round trip. An outside autoscaler (KEDA) must scale the cloud pool
on the backlog depth too: with no cloud worker alive nothing is forwarded to its queue.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.routed = Counter(
            "orchestrator_jobs_routed", "Jobs forwarded to a pool, by reason.",
            ["pool", "reason"], registry=r,
        )  # fmt: skip
        self.spillovers = Counter(
            "orchestrator_spillovers", "Jobs sent past a full first pool.", ["pool"], registry=r
        )
        self.deferrals = Counter(
            "orchestrator_rate_limit_deferrals",
            "Jobs deferred by a rate limit (task buckets) or a pool's bucket.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "orchestrator_dead_letters", "Jobs put on the dead-letter list.", ["reason"], registry=r
        )
        self.recovered = Counter(
            "orchestrator_recovered_jobs", "Jobs taken back from dead conductors.", registry=r
        )
        self.backlog_depth = Gauge(
            "orchestrator_backlog_depth", "Jobs waiting in a backlog.", ["backlog"], registry=r
        )
        self.in_flight = Gauge(
            "orchestrator_in_flight", "Jobs forwarded to a pool and not finished.", ["pool"],
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "orchestrator_pool_queue_depth",
            "Jobs in a pool's arq queue (queued or running): scale the cloud pool on this.",
            ["pool"], registry=r,
        )  # fmt: skip
        self.pool_workers = Gauge(
            "orchestrator_pool_workers",
            "Workers of a scaled pool by state (launching, active, idle, draining).",
            ["pool", "state"], registry=r,
        )  # fmt: skip
        self.pool_launches = Counter(
            "orchestrator_pool_launches", "Worker launches by outcome (launched, booted, failed).",
            ["pool", "outcome"], registry=r,
        )  # fmt: skip
        self.pool_spend = Counter(
            "orchestrator_pool_spend", "Money spent on a pool's launched workers.", ["pool"],
            registry=r,
        )  # fmt: skip
        self.jobs = Counter(
            "orchestrator_jobs_finished", "Jobs a worker finished, by outcome.",
            ["pool", "status"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "orchestrator_job_duration_seconds", "Run time of jobs.", ["pool", "task", "status"],
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.pruned_bytes = Counter(
            "orchestrator_pruned_bytes",
            "Redis memory freed by pruning settled batches (MEMORY USAGE of their keys).",
            registry=r,
        )
        self.pruned_batches = Counter(
            "orchestrator_pruned_batches", "Settled batches archived and removed from Redis.",
            registry=r,
        )  # fmt: skip
        self.redis_memory = Gauge(
            "orchestrator_redis_memory_bytes",
            "Redis memory of a part of the namespace (queues, receipts, dead_letters), "
            "sampled by the conductor that prunes, each prune_interval.",
            ["part"], registry=r,
        )  # fmt: skip
        self.schedule_ticks = Counter(
            "orchestrator_schedule_ticks",
            "Schedule ticks this conductor fired, by outcome (dispatched, nothing, failed, "
            "skipped, missed, paused).",
            ["schedule", "outcome"], registry=r,
        )  # fmt: skip
        self.schedule_outcome = Gauge(
            "orchestrator_schedule_last_outcome",
            "1 for the outcome of a schedule's last tick this conductor fired, 0 for the others.",
            ["schedule", "outcome"], registry=r,
        )  # fmt: skip
        self.schedule_lateness = Gauge(
            "orchestrator_schedule_lateness_seconds",
            "Seconds between a schedule's last tick this conductor fired and its firing.",
            ["schedule"], registry=r,
        )  # fmt: skip
        # A finished job's counter and histogram children, by (pool, task, status):
        # `labels()` looks them up under a lock on every call, this once.
        self._finished: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._last_beat = time.monotonic()
        heartbeat_age = Gauge(
            "orchestrator_heartbeat_age_seconds",
            "Seconds since this process last renewed its heartbeat in Redis.",
            registry=r,
        )
        heartbeat_age.set_function(self.heartbeat_age)

    def finished(self, pool: str, task: str, status: str, duration: float) -> None:
        """A worker finished a job: counted by outcome, its run time observed."""
        children = self._finished.get((pool, task, status))
        if children is None:
            children = (self.jobs.labels(pool, status), self.duration.labels(pool, task, status))
            self._finished[(pool, task, status)] = children
        children[0].inc()
        children[1].observe(duration)

    def pruned(self, freed: int) -> None:
        """A settled batch was archived and removed, freeing `freed` bytes of Redis."""
        self.pruned_batches.inc()
        self.pruned_bytes.inc(freed)

    def schedule_fired(self, schedule: str, outcome: str, lateness: float) -> None:
        """A schedule's tick was fired (or passed unfired) with this outcome."""
        from orchestrator.schedule import OUTCOMES

        self.schedule_ticks.labels(schedule, outcome).inc()
        for each in OUTCOMES:
            self.schedule_outcome.labels(schedule, each).set(1 if each == outcome else 0)
        self.schedule_lateness.labels(schedule).set(lateness)

    def beat(self) -> None:
        """A heartbeat reached Redis."""
        self._last_beat = time.monotonic()

    def heartbeat_age(self) -> float:
        return time.monotonic() - self._last_beat

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
