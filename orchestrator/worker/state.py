"""What a worker process knows of itself — its slots, what it runs, whether it is
stopping, whether Redis answers — shared by the worker's loop (`process`), its
heartbeat (`heartbeat`) and its job runner (`runner`); and how a stopping worker makes
its last Redis calls (`on_the_way_out`)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import structlog
from redis.exceptions import RedisError

from orchestrator.logs import RedisOutage
from orchestrator.metrics import Metrics
from orchestrator.worker.arq_ends import Outcome
from orchestrator.worker.stops import RunningJob

log = structlog.get_logger("orchestrator.worker")
# Seconds a stop gives, past `grace_period`, to what the worker still writes on its way
# out: the ends of the jobs the grace period cut short, its leaving. A Redis that does
# not answer meanwhile leaves those jobs to recovery instead of holding the stop.
WIND_DOWN = 2.0
# Seconds each call on the way out gets once that time is spent, or while Redis is
# known not to answer: one short try, in case it is back.
LAST_TRY = 0.5


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
    outage: RedisOutage = field(default_factory=lambda: RedisOutage(log))
    stop_by: float | None = None  # monotonic: when a stop asked for must be over

    def stop_asked(self, grace: float) -> None:
        """A stop's deadline: the first drains for `grace`, a second one hurries."""
        by = time.monotonic() + (grace if self.stop_by is None else 0.0) + WIND_DOWN
        self.stop_by = by if self.stop_by is None else min(self.stop_by, by)

    def stop_left(self) -> float:
        """Seconds left of the stop (WIND_DOWN when none was asked for: a burst's end)."""
        return WIND_DOWN if self.stop_by is None else self.stop_by - time.monotonic()

    def ran(self, delta: int) -> None:
        """`running` changes by `delta`; idleness is timed from the moment it hits 0."""
        self.running += delta
        self.idle_since = time.time() if self.running == 0 else None


def heartbeat_ttl(interval: float) -> int:
    """A heartbeat outlives three missed beats."""
    return max(1, math.ceil(interval * 3))


async def on_the_way_out(
    state: WorkerState, what: str, call: Callable[[], Awaitable[object]]
) -> bool:
    """One Redis call of a stopping worker (a job put back, its leaving): shielded from
    the stop's cancellation, bounded by what is left of the stop, and never raised — a
    Redis that does not answer must neither hold the stop nor end it in a traceback; what
    the call would have written is left to recovery (the worker's heartbeat lapses, a
    conductor frees its claims). Whether it went through."""
    within = LAST_TRY if state.outage.down else max(state.stop_left(), LAST_TRY)
    with anyio.move_on_after(within, shield=True):
        try:
            await call()
        except (RedisError, OSError) as exc:
            state.outage.failed(exc, during=what)
            return False
        return True
    state.outage.failed(TimeoutError(f"no reply within {within:.1f} s"), during=what)
    return False
