"""Routing: which pools may take a job, in which order, and why one was chosen.

Explicit rules first (a task glob → a pool), then a `meta.pool` pin, then the pools in
order — metal before cloud — skipping a pool until the job has waited its
`spill_after`. The live part of the decision (free slots, rate limits) is made in
Redis, atomically, by `lua/forward.lua`; this module prepares its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from orchestrator.job import Job
from orchestrator.pools import PoolSettings
from orchestrator.settings import Settings


@dataclass(frozen=True, slots=True)
class Route:
    candidates: tuple[str, ...]  # pools to try, in order
    kind: str  # "rule", "pinned" or "order"
    spill_at_ms: int = 0  # when a pool skipped for its spill_after becomes eligible

    @property
    def pinned(self) -> bool:
        return self.kind != "order"

    def reason(self, chosen: str, first_pool: str) -> str:
        """Why `chosen` got the job: `rule`, `pinned`, `metal_free` or `metal_full_spill`."""
        if self.pinned:
            return self.kind
        return f"{chosen}_free" if chosen == first_pool else f"{first_pool}_full_spill"


class UnknownPool(ValueError):
    pass


class Router:
    def __init__(self, settings: Settings) -> None:
        self.pools: list[PoolSettings] = settings.ordered_pools
        self.names = {pool.name for pool in self.pools}
        self.first = self.pools[0].name
        self._rules = [(rule.task, rule.pool) for rule in settings.rules]
        self._rule_cache: dict[str, str | None] = {}

    def route(self, job: Job, now: float) -> Route:
        rule_pool = self._rule_for(job["task"])
        if rule_pool is not None:
            return Route((rule_pool,), "rule")
        pinned = job.get("meta", {}).get("pool")
        if pinned:
            if pinned not in self.names:
                raise UnknownPool(f"meta.pool {pinned!r} is not a configured pool")
            return Route((pinned,), "pinned")
        # A dispatch time ahead of ours (clock skew, or a forged envelope) counts as now:
        # a job must never wait on a clock that is not this one.
        dispatched = min(job["dispatched_at"], now)
        waited = now - dispatched
        eligible = tuple(p.name for p in self.pools if waited >= p.spill_after)
        later = [dispatched + p.spill_after for p in self.pools if waited < p.spill_after]
        return Route(eligible, "order", round(min(later) * 1000) if later else 0)

    def _rule_for(self, task: str) -> str | None:
        if task not in self._rule_cache:
            self._rule_cache[task] = next(
                (pool for pattern, pool in self._rules if fnmatchcase(task, pattern)), None
            )
        return self._rule_cache[task]
