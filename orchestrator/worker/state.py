"""What a worker process knows of itself — its slots, what it runs, whether it is
stopping — shared by the worker's loop (`process`), its heartbeat (`heartbeat`)
and its job runner (`runner`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from orchestrator.metrics import Metrics
from orchestrator.worker.arq_hooks import Outcome
from orchestrator.worker.stops import RunningJob


@dataclass
class WorkerState:
    pool: str
    worker_id: str
    slots: int
    tasks: tuple[str, ...] = ()  # what this worker runs, announced with its heartbeat
    running: int = 0
    done: int = 0
    stopping: int = 0  # signals received: 1 drains, 2 puts running jobs back in line
    metrics: Metrics = field(default_factory=Metrics)
    ttl: int = 15  # seconds a heartbeat outlives its last beat
    # Seconds of work the pool may hold queued beyond its slots (`prefetch_seconds`),
    # announced with the heartbeat: the conductors size the pool's prefetch from it.
    prefetch: float = 0.0
    jobs: dict[str, RunningJob] = field(default_factory=dict)  # arq id → job it runs
    # arq id → the end its runner staged, written by `WakeableWorker.finish_job`
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # arq ids whose claim also began them (lua/start_jobs.lua): no begin.lua for them
    begun: set[str] = field(default_factory=set)
    launch_id: str = ""  # the scaler launch it answers, "" when started otherwise
    idle_since: float | None = field(default_factory=time.time)  # None while running jobs
    idle_exit: float | None = None  # seconds idle before it leaves by itself

    def ran(self, delta: int) -> None:
        """`running` changes by `delta`; idleness is timed from the moment it hits 0."""
        self.running += delta
        self.idle_since = time.time() if self.running == 0 else None


def heartbeat_ttl(interval: float) -> int:
    """A heartbeat outlives three missed beats."""
    return max(1, math.ceil(interval * 3))
