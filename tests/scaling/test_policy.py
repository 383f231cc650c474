"""The scaler's policy, rule by rule (no Redis, no clock: `scaling.policy.decide` is pure)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.pools import ScalerSettings
from orchestrator.scaling.policy import View, Worker, backoff, decide

NOW = 1_000_000.0


def config(**fields: Any) -> ScalerSettings:
    base: dict[str, Any] = {
        "max_workers": 3, "slots_per_worker": 2, "scale_up_after": 1, "launch_rate": 60,
        "idle_release_after": 10,
    }  # fmt: skip
    return ScalerSettings(**{**base, **fields})


def view(demand: int, *workers: Worker, **fields: Any) -> View:
    base: dict[str, Any] = {
        "now": NOW, "demand": demand, "workers": workers, "launching": 0,
        "recent_launches": (), "spend_today": 0.0, "pressure_since": NOW - 5,
    }  # fmt: skip
    return View(**{**base, **fields})


def idle(name: str, since: float = NOW - 60, *, launched: bool = True) -> Worker:
    return Worker(name, 2, 0, since, False, launched)


def busy(name: str) -> Worker:
    return Worker(name, 2, 2, None, False, True)


@pytest.mark.parametrize(("demand", "target"), [(0, 0), (1, 1), (2, 1), (3, 2), (6, 3), (99, 3)])
def test_the_target_is_demand_over_slots_within_min_and_max(demand: int, target: int) -> None:
    assert decide(config(), view(demand)).target == target


def test_min_workers_are_kept_even_without_demand() -> None:
    plan = decide(config(min_workers=1), view(0))
    assert (plan.target, plan.launch) == (1, 1)


def test_no_launch_before_demand_has_lasted_scale_up_after() -> None:
    plan = decide(config(), view(6, pressure_since=NOW - 0.5))
    assert plan.launch == 0
    assert "scale_up_after" in plan.reason
    assert decide(config(), view(6, pressure_since=NOW - 1)).launch == 3


def test_launching_workers_count_as_capacity() -> None:
    assert decide(config(), view(6, busy("a"), launching=1)).launch == 1


def test_launch_rate_caps_launches_in_any_minute() -> None:
    plan = decide(config(launch_rate=2), view(6, recent_launches=(NOW - 30,)))
    assert plan.launch == 1
    assert "launch_rate" in plan.reason
    slow = config(launch_rate=0.5)  # one every two minutes
    assert decide(slow, view(6, recent_launches=(NOW - 90,))).launch == 0
    assert decide(slow, view(6, recent_launches=(NOW - 121,))).launch == 1


def test_no_launch_while_backing_off_and_back_off_grows_to_a_ceiling() -> None:
    assert decide(config(), view(6, backoff_until=NOW + 3)).launch == 0
    assert [backoff(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(30) == 300


def test_a_budget_of_one_worker_minute_affords_exactly_one_launch() -> None:
    thrifty = config(price_per_worker_hour=3.6, budget_per_day=0.06)
    first = decide(thrifty, view(6))
    assert (first.launch, first.budget_reached) == (1, True)
    assert decide(thrifty, view(6, busy("a"))).launch == 0


def test_a_spent_budget_releases_every_launched_worker_and_launches_none() -> None:
    spent = config(price_per_worker_hour=3.6, budget_per_day=0.06)
    manual = Worker("m", 2, 1, None, False, False)
    plan = decide(spent, view(6, busy("a"), idle("b"), manual, spend_today=0.06))
    assert (plan.launch, plan.budget_reached) == (0, True)
    assert sorted(plan.release) == ["a", "b"]  # never a worker the scaler did not launch
    assert plan.target == 1  # a release command scales down to what is left, never up


def test_idle_launched_workers_above_target_are_released_longest_idle_first() -> None:
    plan = decide(config(), view(0, idle("new", NOW - 11), idle("old", NOW - 50), busy("c")))
    assert plan.release == ["old", "new"]
    assert decide(config(), view(0, idle("fresh", NOW - 5))).release == []
    kept = decide(config(min_workers=1), view(0, idle("a"), idle("b", NOW - 30)))
    assert kept.release == ["a"]
    assert decide(config(), view(0, idle("hand", launched=False))).release == []
