"""How `status` tells a pool's scaler: what the scaler last wrote of the pool, today's
spend, and, when no scaler runs, what the settings say.

The scaler rewrites its view of each pool (`Keys.scaler_state`) every tick with a short
TTL, so the hash being there means some conductor runs a scaler now; a pool whose
settings give it a scaler but whose hash is gone has none running (no conductor, or
one with other settings), and shows only the day's spend counter and the settings'
budget and price. Fields are read leniently — a number missing or unreadable is null
(a worker count, 0) — since another process, perhaps of another version, wrote them,
and status must not die of that.
"""

from __future__ import annotations

import math

from orchestrator.pools import ScalerSettings
from orchestrator.status.batches import as_int, as_time
from orchestrator.status.model import Decision, Scaler, ScalerWorkers


def read_scaler(
    config: ScalerSettings | None, state: dict[str, str], spend: str | None
) -> Scaler | None:
    """The pool's scaler as status shows it; None when it has none configured or running.

    `state`: the scaler's hash (empty when gone); `spend`: the spend counter of today.
    """
    if config is None and not state:
        return None
    counted = _number(spend)
    if not state:
        assert config is not None
        return Scaler(
            configured=True, running=False, leader=None, demand=None, target=None,
            workers=None, spend_today=round(counted or 0.0, 6),
            budget=config.budget_per_day, budget_reached=False,
            price_per_worker_hour=config.price_per_worker_hour, decision=None,
        )  # fmt: skip
    if "budget" in state:  # "" is the scaler's word for no budget
        budget = _number(state["budget"])
    else:
        budget = None if config is None else config.budget_per_day
    price = _number(state.get("price"))
    if price is None and config is not None:
        price = config.price_per_worker_hour
    event = state.get("decision")
    spent = counted if counted is not None else _number(state.get("spend_today"))
    return Scaler(
        configured=config is not None,
        running=True,
        leader=state.get("leader") or None,
        demand=_count(state.get("demand")),
        target=_count(state.get("target")),
        workers=ScalerWorkers(
            launching=as_int(state.get("launching")),
            active=as_int(state.get("active")),
            idle=as_int(state.get("idle")),
            draining=as_int(state.get("draining")),
        ),
        spend_today=round(spent or 0.0, 6),
        budget=budget,
        budget_reached=state.get("budget_reached") == "1",
        price_per_worker_hour=price,
        decision=(
            None
            if not event
            else Decision(event, state.get("reason", ""), as_time(state.get("at")))
        ),
    )


def _count(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _number(value: str | None) -> float | None:
    """A float a field holds; None when it holds none, or no finite number."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is None or math.isfinite(number) else None
