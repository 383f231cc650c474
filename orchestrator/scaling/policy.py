"""The scaler's policy: from what it sees of a pool, how many workers to launch and which
to release. Pure (no Redis, no clock), so every rule is unit-tested on its own.

- **Target**: ceil(demand / slots_per_worker), within min_workers and max_workers.
- **Launch** only when demand has exceeded the pool's capacity (live and launching
  workers) for `scale_up_after` seconds — a burst shorter than that is left to the pools
  before it — at most `launch_rate` launches in any minute, not during a back-off after
  a failed launch, and only what the budget affords.
- **Budget**: money accrues for every launched worker from launch until its heartbeat is
  gone. A launch commits at least `MIN_BILLED` seconds of one worker, so it happens only
  if today's spend plus a minimum bill for each paid worker, the new one included, stays
  within `budget_per_day`. Once today's spend reaches the budget, every launched worker
  is released (drained: running jobs finish or go back in line) and the pool's jobs wait
  for the pools before it.
- **Release** idle workers (no job for `idle_release_after` seconds), longest idle first,
  while the pool has more workers than its target; only workers the scaler launched, and
  never below `min_workers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.pools import ScalerSettings

MIN_BILLED = 60.0  # seconds of a worker a launch commits to paying for
BACKOFF_FIRST, BACKOFF_MAX = 5.0, 300.0  # seconds, after failed launches


@dataclass(frozen=True, slots=True)
class Worker:
    """A live worker of the pool, as its heartbeat tells."""

    id: str
    slots: int
    running: int
    idle_since: float | None  # None while it runs jobs
    draining: bool
    launched: bool  # the scaler launched it (only those are released)


@dataclass(frozen=True, slots=True)
class View:
    now: float
    demand: int  # jobs that may run on the pool and have nowhere else to run now
    workers: tuple[Worker, ...]
    launching: int  # launched, no heartbeat yet
    recent_launches: tuple[float, ...]  # launch times within the last minute or so
    spend_today: float
    pressure_since: float | None  # since when demand has exceeded capacity
    backoff_until: float = 0.0


@dataclass(slots=True)
class Plan:
    target: int
    launch: int = 0
    release: list[str] = field(default_factory=list)
    budget_reached: bool = False
    reason: str = ""


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` launches failed in a row: 5, 10, 20 … 300."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, failures - 1)))


def decide(config: ScalerSettings, view: View) -> Plan:
    serving = [w for w in view.workers if not w.draining]
    capacity = len(serving) + view.launching
    target = min(config.max_workers, max(config.min_workers, _needed(config, view.demand)))
    plan = Plan(target)
    per_second = config.price_per_worker_hour / 3600
    budget = config.budget_per_day
    if budget is not None and per_second > 0 and view.spend_today >= budget:
        plan.budget_reached = True
        plan.release = [w.id for w in serving if w.launched]
        plan.target = len(serving) - len(plan.release)  # what a release command scales to
        plan.reason = f"spent {view.spend_today:.4f} of {budget:.4f} today"
        return plan
    if target > capacity:
        plan.launch, plan.reason = _launches(config, view, target - capacity, capacity)
        if plan.launch < target - capacity and plan.reason.startswith("budget"):
            plan.budget_reached = True
        return plan
    plan.release = _idle_to_release(config, view, serving, target)
    if plan.release:
        plan.reason = f"idle for {config.idle_release_after:g} s with {len(serving)} > target"
    return plan


def _needed(config: ScalerSettings, demand: int) -> int:
    return math.ceil(max(demand, 0) / config.slots_per_worker)


def _launches(config: ScalerSettings, view: View, want: int, capacity: int) -> tuple[int, str]:
    """How many of `want` launches may happen now, and why not more."""
    if view.pressure_since is None or view.now - view.pressure_since < config.scale_up_after:
        return 0, f"demand has not lasted scale_up_after ({config.scale_up_after:g} s)"
    if view.now < view.backoff_until:
        return 0, f"backing off after a failed launch for {view.backoff_until - view.now:.1f} s"
    room = want
    reason = f"demand {view.demand} jobs needs {capacity + want} workers"
    window = max(60.0, 60.0 / config.launch_rate)
    recent = sum(1 for at in view.recent_launches if view.now - at < window)
    by_rate = max(0, max(1, math.floor(config.launch_rate)) - recent)
    if by_rate < room:
        room, reason = by_rate, f"launch_rate ({config.launch_rate:g}/min) allows {by_rate} now"
    per_second = config.price_per_worker_hour / 3600
    if config.budget_per_day is not None and per_second > 0:
        left = config.budget_per_day - view.spend_today
        paid = len([w for w in view.workers if w.launched]) + view.launching
        affordable = max(0, math.floor(left / (per_second * MIN_BILLED) + 1e-9) - paid)
        if affordable < room:
            room = affordable
            reason = (
                f"budget: {left:.4f} of {config.budget_per_day:g} left today affords "
                f"{affordable} more (a launch commits {MIN_BILLED:g} s)"
            )
    return room, reason


def _idle_to_release(
    config: ScalerSettings, view: View, serving: list[Worker], target: int
) -> list[str]:
    keep = max(target, config.min_workers)
    excess = len(serving) - keep
    if excess <= 0:
        return []
    idle = [
        w
        for w in serving
        if w.launched
        and w.running == 0
        and w.idle_since is not None
        and view.now - w.idle_since >= config.idle_release_after
    ]
    idle.sort(key=lambda w: w.idle_since or 0.0)
    return [w.id for w in idle[:excess]]
