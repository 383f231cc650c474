"""What a batch used of each pool, for `verify`: job-seconds, and where the pool's
scaler tells how many slots a worker has and what it costs, worker-seconds and cost.

A pool's job-seconds are the sum of the durations of the batch's receipts in it: the
seconds its jobs held a worker slot. A worker runs `slots_per_worker` jobs at once, so
the batch's worker-seconds are that over slots_per_worker (its share of paid worker
time), and its cost those times the price per worker-hour, over 3600. It is the batch's
share, not the bill: a launched worker is paid from launch until it leaves, booting and
idle included (`status` shows the day's spend). A receipt tells the last run of its
job — a retry's receipt replaces the one before — so earlier attempts of a retried job
are not counted.

Sums only, one per pool, so that a pass's memory does not grow with the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.money import money
from orchestrator.receipts import Receipt
from orchestrator.settings import Settings


@dataclass(frozen=True, slots=True)
class Price:
    per_worker_hour: float
    slots_per_worker: int


def pool_prices(settings: Settings) -> dict[str, Price]:
    """The pools that have a scaler (its slots per worker and price); the others' worker
    size and price are not known."""
    return {
        pool.name: Price(pool.scaler.price_per_worker_hour, pool.scaler.slots_per_worker)
        for pool in settings.pools
        if pool.scaler is not None
    }


@dataclass
class PoolUsage:
    prices: Mapping[str, Price] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # pool → job-seconds

    def add(self, receipt: Receipt) -> None:
        """Count a receipt's run; a job cancelled before it started (no pool, no time)
        adds nothing."""
        pool, duration = receipt.get("pool"), receipt.get("duration")
        if pool and isinstance(duration, int | float) and duration > 0:
            self.seconds[pool] = self.seconds.get(pool, 0.0) + duration

    def worker_seconds(self, pool: str) -> float | None:
        """The batch's share of the pool's worker time; None when the worker size is unknown."""
        price = self.prices.get(pool)
        if price is None:
            return None
        return self.seconds.get(pool, 0.0) / price.slots_per_worker

    def cost(self, pool: str) -> float | None:
        """What the pool's worker time for the batch cost; None when it has no price."""
        price, seconds = self.prices.get(pool), self.worker_seconds(pool)
        if price is None or seconds is None:
            return None
        return seconds / 3600 * price.per_worker_hour

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Per pool that ran any of the batch: `job_seconds`, `worker_seconds`, `cost` and
        the `price_per_worker_hour` and `slots_per_worker` it was reckoned at (null: the
        pool has no scaler to tell them)."""
        usage: dict[str, dict[str, Any]] = {}
        for pool, seconds in sorted(self.seconds.items()):
            price, cost = self.prices.get(pool), self.cost(pool)
            workers = self.worker_seconds(pool)
            usage[pool] = {
                "job_seconds": round(seconds, 6),
                "worker_seconds": None if workers is None else round(workers, 6),
                "cost": None if cost is None else round(cost, 6),
                "price_per_worker_hour": None if price is None else price.per_worker_hour,
                "slots_per_worker": None if price is None else price.slots_per_worker,
            }
        return usage

    def lines(self) -> list[str]:
        """One line per pool, for the text report: `cloud: 41.20 job-seconds = 20.60
        worker-seconds, cost $0.0046 at $0.80/h`."""
        shown = []
        for pool, seconds in sorted(self.seconds.items()):
            line = f"{pool}: {seconds:.2f} job-seconds"
            price, cost = self.prices.get(pool), self.cost(pool)
            if price is not None and cost is not None:
                line += (
                    f" = {seconds / price.slots_per_worker:.2f} worker-seconds, "
                    f"cost {money(cost)} at {money(price.per_worker_hour)}/h"
                )
            shown.append(line)
        return shown
