"""Three conductor processes share one bucket (10/s, burst 5) for over 10 s: at every
instant the jobs admitted so far stay within 5 + 10 x elapsed, and the run uses at least
90 % of that allowance."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import StackFactory
from tests.live_stack import write_manifest

# Paced and timed: alone on the machine, after the parallel pass.
pytestmark = [pytest.mark.chaos, pytest.mark.serial]
RATE, BURST, JOBS = 10, 5, 130


def test_three_conductors_share_one_bucket(stack: StackFactory, tmp_path: Path) -> None:
    run = stack(rate_limits={"task:system.echo": {"rate": RATE, "burst": BURST}})
    run.worker("metal", 20)
    conductors = [run.conductor(), run.conductor(), run.conductor()]
    lines = [{"task": "system.echo", "args": [n]} for n in range(JOBS)]
    run.dispatch(write_manifest(tmp_path / "shared_01.jsonl", lines))
    run.wait_for_receipts("shared_01", JOBS, timeout=60)
    forwards = sorted(
        datetime.fromisoformat(event["timestamp"]).timestamp()
        for process in conductors
        for event in run.events(process, "routed")
    )
    assert len(forwards) == JOBS
    assert sum(bool(run.events(process, "routed")) for process in conductors) >= 2  # shared
    start = forwards[0]
    for admitted, at in enumerate(forwards, start=1):
        # The log line follows the decision by a moment; 20 ms of slack for that.
        assert admitted <= BURST + RATE * (at - start + 0.02), (admitted, at - start)
    elapsed = forwards[-1] - start
    assert elapsed >= 10  # the run lasted the ten seconds the check is about
    allowance = BURST + RATE * elapsed
    assert allowance * 0.9 <= JOBS
