"""A batch's worker time and cost per pool, as `verify` sums them from receipts (no
Redis: receipts are fed as the worker writes them)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.pools import PoolSettings, ScalerSettings
from orchestrator.settings import Settings
from orchestrator.verify.cost import PoolUsage, Price, pool_prices

CLOUD = Price(per_worker_hour=0.8, slots_per_worker=2)


def receipt(pool: str, duration: float, status: str = "succeeded") -> Any:
    return {"job_id": "b:1", "batch": "b", "task": "t", "status": status, "pool": pool,
            "worker": "w", "attempt": 1, "started_at": 1.0, "ended_at": 1.0 + duration,
            "duration": duration, "error": None}  # fmt: skip


def test_worker_seconds_are_summed_per_pool_and_priced_per_worker_slot() -> None:
    usage = PoolUsage({"cloud": CLOUD})
    for pool, seconds, status in (
        ("cloud", 20.0, "succeeded"), ("cloud", 21.2, "failed"), ("cloud", 0.5, "retrying"),
        ("metal", 12.0, "succeeded"),
    ):  # fmt: skip
        usage.add(receipt(pool, seconds, status))

    assert usage.seconds == {"cloud": pytest.approx(41.7), "metal": 12.0}
    # 41.7 s of jobs, two at a time on a worker: 20.85 s of a worker at 0.8 an hour
    assert usage.cost("cloud") == pytest.approx(41.7 / 2 * 0.8 / 3600)
    assert usage.cost("metal") is None
    assert usage.to_json() == {
        "cloud": {"job_seconds": 41.7, "worker_seconds": 20.85, "cost": 0.004633,
                  "price_per_worker_hour": 0.8, "slots_per_worker": 2},
        "metal": {"job_seconds": 12.0, "worker_seconds": None, "cost": None,
                  "price_per_worker_hour": None, "slots_per_worker": None},
    }  # fmt: skip


def test_jobs_cancelled_before_they_started_add_no_pool_and_no_time() -> None:
    usage = PoolUsage({"cloud": CLOUD})
    usage.add(receipt("", 0.0, "cancelled"))  # as lua/lib/cancelling.lua writes it
    usage.add(receipt("cloud", 0.0, "cancelled"))

    assert usage.seconds == {}
    assert usage.to_json() == {}
    assert usage.lines() == []


def test_text_lines_name_the_pool_its_time_and_its_cost_at_its_price() -> None:
    usage = PoolUsage({"cloud": CLOUD})
    usage.add(receipt("metal", 12.04))
    usage.add(receipt("cloud", 41.2))

    assert usage.lines() == [
        "cloud: 41.20 job-seconds = 20.60 worker-seconds, cost $0.0046 at $0.80/h",
        "metal: 12.04 job-seconds",
    ]


def test_only_pools_with_a_scaler_are_priced_free_ones_at_zero() -> None:
    settings = Settings(
        pools=[
            PoolSettings(name="metal", order=0),
            PoolSettings(name="cloud", order=1, scaler=ScalerSettings(
                price_per_worker_hour=0.8, slots_per_worker=4)),
            PoolSettings(name="spot", order=2, scaler=ScalerSettings()),  # price 0
        ]
    )  # fmt: skip

    assert pool_prices(settings) == {"cloud": Price(0.8, 4), "spot": Price(0.0, 2)}
