"""A rate limit paces jobs at its rate, from one conductor or three sharing the bucket:
at 50/s (burst 1 and 10) the forwards stay within the bucket in every window, the
batch keeps to the rate (bench/pacing.py holds the 1.05x-of-ideal target), and a job
is deferred about once — not the
10 rounds a second of a `BLMOVE` timeout, nor a re-deferral storm.

The forward instants are the `at` of the `routed` log lines: Redis's clock at the
forward, the clock the bucket is kept on.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.pacing import window_excess
from tests.conftest import StackFactory
from tests.stack import Stack, write_manifest

RATE, JOBS = 50, 250


@pytest.mark.parametrize(("burst", "conductors"), [(1, 1), (10, 1), (1, 3), (10, 3)])
def test_jobs_go_out_at_the_rate_deferred_once(
    stack: StackFactory, tmp_path: Path, burst: int, conductors: int
) -> None:
    """Forwards within burst + rate·t in every window, the batch close to
    (jobs - burst) / rate, at most 1.1 deferrals per job."""
    run = stack(rate_limits={"task:system.echo": {"rate": RATE, "burst": burst}})
    worker = frozen_worker(run)
    try:
        processes = start_conductors(run, conductors)
        lines = [{"task": "system.echo", "args": [n]} for n in range(JOBS)]
        run.dispatch(write_manifest(tmp_path / "paced_01.jsonl", lines))
        run.wait_for(
            lambda: sum(len(run.events(p, "routed")) for p in processes) >= JOBS,
            "every job forwarded",
            timeout=60,
        )
    finally:
        worker.send_signal(signal.SIGCONT)
    forwards = sorted(float(e["at"]) for p in processes for e in run.events(p, "routed"))
    deferrals = sum(len(run.events(p, "rate_limited")) for p in processes)
    assert len(forwards) == JOBS
    assert window_excess(forwards, RATE, burst) <= 1e-6
    # The 1.05x target is bench/pacing.py's (a test asserts no wall-clock speed: on a
    # loaded 2-core machine one run in six took 1.065x); 1.2x still fails the old pacing,
    # whose forwards followed Redis's 100 ms timer tick (2x at 20/s).
    ideal = (JOBS - burst) / RATE
    assert forwards[-1] - forwards[0] <= 1.2 * ideal, (forwards[-1] - forwards[0], ideal)
    assert deferrals <= 1.1 * JOBS, deferrals
    if conductors > 1:
        assert sum(bool(run.events(p, "routed")) for p in processes) >= 2  # shared


def test_window_excess_sees_a_burst_beyond_the_bucket() -> None:
    """The measure itself: jobs exactly at the rate exceed nothing; two at once with a
    burst of 1 exceed it by one job."""
    paced = [n / RATE for n in range(20)]
    assert window_excess(paced, RATE, 1) == pytest.approx(0.0)
    assert window_excess([0.0, *paced], RATE, 1) == pytest.approx(1.0)
    assert window_excess([0.0, 0.0, *paced], RATE, 10) <= 0


def frozen_worker(run: Stack) -> subprocess.Popen[bytes]:
    """A metal worker with a slot for every job, stopped (SIGSTOP) once it announced
    them, with a heartbeat that outlasts the test: the pool takes every forward and runs
    nothing, so that what is measured is the conductors' pacing, not how they share two
    cores with a worker running 50 jobs a second."""
    beat = run.env["ORCHESTRATOR_HEARTBEAT_INTERVAL"]
    run.env["ORCHESTRATOR_HEARTBEAT_INTERVAL"] = "100"
    try:
        worker = run.worker("metal", JOBS)
    finally:
        run.env["ORCHESTRATOR_HEARTBEAT_INTERVAL"] = beat
    worker.send_signal(signal.SIGSTOP)
    return worker


def start_conductors(run: Stack, count: int) -> list[subprocess.Popen[bytes]]:
    processes = [run.conductor() for _ in range(count)]
    run.wait_for(lambda: run.redis.scard(run.keys.conductors) >= count, "conductors up")
    time.sleep(0.7)  # past their start-up hold, one heartbeat interval
    return processes
