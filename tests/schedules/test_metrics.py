"""The schedule metrics a conductor exports (orchestrator/metrics.py)."""

from __future__ import annotations

from orchestrator.metrics import Metrics


def test_last_outcome_and_lateness_are_exported() -> None:
    """After a tick, its outcome is the one set to 1, its lateness the gauge's value, and
    the ticks counted by outcome."""
    metrics = Metrics()
    metrics.schedule_fired("nightly-gap-fill", "failed", 1.5)
    metrics.schedule_fired("nightly-gap-fill", "dispatched", 0.25)
    text = metrics.exposition().decode()
    assert (
        'orchestrator_schedule_last_outcome{outcome="dispatched",schedule="nightly-gap-fill"} 1.0'
        in text
    )
    assert (
        'orchestrator_schedule_last_outcome{outcome="failed",schedule="nightly-gap-fill"} 0.0'
        in text
    )
    assert 'orchestrator_schedule_lateness_seconds{schedule="nightly-gap-fill"} 0.25' in text
    assert (
        'orchestrator_schedule_ticks_total{outcome="failed",schedule="nightly-gap-fill"} 1.0'
        in text
    )
