"""How `status` reads a pool's scaler from what the scaler wrote (`Keys.scaler_state`),
the day's spend counter and the settings (no Redis: fed as `lua/snapshot.lua` hands
them back)."""

from __future__ import annotations

from orchestrator.pools import ScalerSettings
from orchestrator.status.model import Decision, ScalerWorkers
from orchestrator.status.scaler import read_scaler

CONFIG = ScalerSettings(price_per_worker_hour=0.8, budget_per_day=5.0)
STATE = {
    "demand": "9", "target": "4", "launching": "1", "active": "2", "idle": "1",
    "draining": "0", "spend_today": "0.400000", "budget": "5", "budget_reached": "0",
    "price": "0.8", "decision": "scale_up", "reason": "demand 9 jobs needs 4 workers",
    "at": "1700000000.250", "leader": "c-1",
}  # fmt: skip


def test_a_pool_with_no_scaler_configured_or_running_has_none() -> None:
    assert read_scaler(None, {}, None) is None


def test_a_running_scaler_is_read_field_by_field_and_the_spend_counter_wins() -> None:
    scaler = read_scaler(CONFIG, STATE, "0.421337")

    assert scaler is not None
    assert (scaler.configured, scaler.running, scaler.leader) == (True, True, "c-1")
    assert (scaler.demand, scaler.target) == (9, 4)
    assert scaler.workers == ScalerWorkers(launching=1, active=2, idle=1, draining=0)
    assert (scaler.spend_today, scaler.budget, scaler.budget_reached) == (0.421337, 5.0, False)
    assert scaler.price_per_worker_hour == 0.8
    assert scaler.decision == Decision("scale_up", "demand 9 jobs needs 4 workers", 1700000000.25)
    # no counter yet (nothing spent today): what the scaler last saw
    uncounted = read_scaler(CONFIG, STATE, None)
    assert uncounted is not None
    assert uncounted.spend_today == 0.4


def test_configured_but_not_running_shows_the_settings_and_the_counter_only() -> None:
    scaler = read_scaler(CONFIG, {}, "1.5")

    assert scaler is not None
    assert (scaler.configured, scaler.running, scaler.budget_reached) == (True, False, False)
    assert (scaler.demand, scaler.target, scaler.workers, scaler.decision) == (None,) * 4
    assert (scaler.spend_today, scaler.budget, scaler.price_per_worker_hour) == (1.5, 5.0, 0.8)


def test_a_state_without_settings_no_budget_and_bad_numbers_read_as_null() -> None:
    """A scaler of a conductor with other settings; `""` is its word for no budget."""
    state = {**STATE, "budget": "", "budget_reached": "1", "target": "many", "demand": "",
             "price": "nan", "at": "", "decision": "budget_reached", "reason": ""}  # fmt: skip
    scaler = read_scaler(None, state, "garbage")

    assert scaler is not None
    assert (scaler.configured, scaler.running, scaler.budget) == (False, True, None)
    assert (scaler.target, scaler.demand, scaler.price_per_worker_hour) == (None, None, None)
    assert scaler.spend_today == 0.4  # the counter holds no number: the scaler's own
    assert scaler.budget_reached is True
    assert scaler.decision == Decision("budget_reached", "", None)
