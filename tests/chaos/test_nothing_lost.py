"""Nothing lost, the way the most trusted queues prove it: kill things mid-batch.

2,000 short jobs, two conductors and four workers on a real Redis. When half are done,
one conductor and two workers are SIGKILLed and the others SIGTERMed; fresh ones start.
Every job must end with a successful receipt; re-runs (a killed worker's jobs run again)
are counted and reported, and each job id still has exactly one receipt.

And a Redis server killed and restarted mid-batch (append-only file, fsync always):
conductors and workers reconnect by themselves, and every job completes.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.stack.redis_server import RedisServer, free_port
from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest

pytestmark = pytest.mark.chaos
JOBS = 2000


def test_kills_mid_batch_lose_nothing(stack: StackFactory, tmp_path: Path) -> None:
    run = stack()
    started = time.monotonic()
    conductors = [run.conductor(), run.conductor()]
    workers = [
        run.worker("metal", 8),
        run.worker("metal", 8),
        run.worker("cloud", 8),
        run.worker("cloud", 8),
    ]
    lines = [{"task": "system.sleep", "args": [0.02]} for _ in range(JOBS)]
    run.dispatch(write_manifest(tmp_path / "chaos_01.jsonl", lines))
    run.wait_for(lambda: _receipts(run) >= JOBS // 2, "half the batch", timeout=120)

    for process in (conductors[0], workers[0], workers[2]):
        process.send_signal(signal.SIGKILL)
    for process in (conductors[1], workers[1], workers[3]):
        process.send_signal(signal.SIGTERM)
    for process in (*conductors, *workers):
        process.wait(30)
    fresh = [run.conductor(), run.conductor()]
    fresh += [
        run.worker("metal", 8),
        run.worker("metal", 8),
        run.worker("cloud", 8),
        run.worker("cloud", 8),
    ]

    run.wait_for(
        lambda: _receipts(run) == JOBS and _succeeded(run) == JOBS,
        "every job",
        timeout=180,
        deaths_expected=True,
    )
    receipts = run.receipts("chaos_01")
    assert sorted(r["job_id"] for r in receipts) == sorted(
        f"chaos_01:{n}" for n in range(1, JOBS + 1)
    )
    lost = JOBS - sum(r["status"] == "succeeded" for r in receipts)
    completions = Counter(
        event["job_id"]
        for process in run.processes
        for event in run.events(process, "job_succeeded")
    )
    reruns = sum(r["attempt"] > 1 for r in receipts)  # started again after a killed run
    # From the workers' logs, so a lower bound: a SIGKILLed worker loses its last lines.
    twice = sum(count - 1 for count in completions.values())
    print(
        f"\nchaos: {JOBS} jobs, killed 1 conductor + 2 workers (SIGKILL), stopped 1 + 2 (SIGTERM), "
        f"re-runs {reruns}, completed twice {twice}, lost {lost}, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert lost == 0
    assert len(receipts) == JOBS  # one receipt per job id, however often it ran


def test_redis_killed_and_restarted_mid_batch_loses_nothing(tmp_path: Path, namespace: str) -> None:
    server = RedisServer(
        tmp_path / "redis", port=free_port(), appendonly=True, extra=("--appendfsync", "always")
    ).start()
    run = Stack(server.url, namespace, tmp_path, {})
    try:
        run.worker("metal", 4)
        run.worker("cloud", 4)
        run.conductor()
        lines = [{"task": "system.sleep", "args": [0.05]} for _ in range(300)]
        run.dispatch(write_manifest(tmp_path / "outage_01.jsonl", lines))
        run.wait_for(lambda: len(run.receipts("outage_01")) >= 60, "a fifth of the batch")
        server.kill()
        time.sleep(2.0)  # longer than the heartbeats' TTL (1.5 s): they lapse meanwhile
        server.start()
        run.wait_for(
            lambda: sum(r["status"] == "succeeded" for r in run.receipts("outage_01")) == 300,
            "every job after the restart",
            timeout=120,
        )
        assert all(process.poll() is None for process in run.processes)
        # The outage is no job's failure: a job cut short by it runs again as the same
        # try, and once only — not also on a second worker that took it because the
        # first, claiming again before its next heartbeat, looked dead.
        tries = Counter(r["attempt"] for r in run.receipts("outage_01"))
        assert tries == {1: 300}, tries
    finally:
        run.stop()
        server.stop()


def _receipts(run: Stack) -> int:
    """Cheap to poll (parsing 2,000 receipts twenty times a second would starve the
    two cores the processes under test need)."""
    time.sleep(0.2)
    return int(run.redis.hlen(run.keys.receipts("chaos_01")))


def _succeeded(run: Stack) -> int:
    return sum(r["status"] == "succeeded" for r in run.receipts("chaos_01"))
