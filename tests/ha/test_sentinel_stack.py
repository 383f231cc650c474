"""`orchestrator up` on an external Redis reached only through a `redis+sentinel://` URL,
with the elastic cloud scaler on: `up` starts no Redis of its own, its conductor's
scaler launches cloud workers when metal is full, and the master is SIGKILLed
mid-batch. The batch ends all succeeded, the launched workers go on running jobs after
the failover, the dashboard answers through the same URL, and nothing exits."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.stack.redis_server import free_port
from tests.ha.topologies import SentinelSet, until, until_all_succeeded
from tests.live_stack import write_manifest

pytestmark = pytest.mark.chaos
JOBS = 60


def test_up_with_elastic_cloud_and_its_dashboard_follow_a_sentinel_failover(
    sentinels: SentinelSet, namespace: str, tmp_path: Path
) -> None:
    """Metal full, cloud launched by the scaler, master killed: every job succeeds, cloud
    jobs start after the promotion, /api/status answers, no process of `up` exits."""
    assert sentinels.replica is not None
    run = sentinels.stack(namespace, tmp_path, {})
    up = run.start(
        "up", "--data-dir", str(tmp_path / "up"), "--metal", "2", "--cloud", "4", "--elastic",
        "--web-port", str(free_port()),
    )  # fmt: skip
    try:
        until(lambda: run.redis.scard(run.keys.workers("metal")), "up's metal worker")
        base = ready_line(run.logs[up.pid])["web"].split("#")[0]
        assert "redis_started" not in run.logs[up.pid].read_text()  # the external one only
        sleepers = [{"task": "system.sleep", "args": [1.0]} for _ in range(JOBS)]
        run.dispatch(write_manifest(tmp_path / "elastic_01.jsonl", sleepers))
        until(lambda: len(on_cloud(run.receipts("elastic_01"))) >= 4, "cloud jobs done", 60)

        killed, promoted = sentinels.kill_master()

        until_all_succeeded(run, "elastic_01", JOBS, "after the failover", 120)
        receipts = run.receipts("elastic_01")
        assert {r["status"] for r in receipts} == {"succeeded"}
        later = [r for r in on_cloud(receipts) if r["started_at"] > promoted]
        assert later, "no job started on a launched cloud worker after the promotion"
        status = api_status(base)  # the dashboard's own client followed the failover too
        assert status["redis"]["url"].startswith("redis+sentinel://")
        (batch,) = [b for b in status["batches"] if b["id"] == "elastic_01"]
        assert batch["done"] == JOBS, batch
        assert up.poll() is None, "up exited"
        text = run.logs[up.pid].read_text(errors="replace")
        assert "child_exited" not in text
        assert "Traceback" not in text
        print(
            f"\nkill -> promotion {promoted - killed:.2f} s; promotion -> first cloud job "
            f"started {min(r['started_at'] for r in later) - promoted:.2f} s"
        )
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        up.wait(60)
        run.stop()
    assert up.returncode == 0
    assert "child_killed" not in run.logs[up.pid].read_text()


def on_cloud(receipts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in receipts if r["pool"] == "cloud" and r["status"] == "succeeded"]


def ready_line(log: Path) -> dict[str, Any]:
    """`up`'s `ready` line: the dashboard's URL (with its token) is in it."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        lines = [orjson.loads(x) for x in log.read_bytes().splitlines() if x.startswith(b"{")]
        found[:] = [line for line in lines if line.get("event") == "ready"]
        return bool(found)

    until(ready, "up's ready line")
    return found[0]


def api_status(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "api/status", timeout=10) as reply:
        assert reply.status == 200
        document: dict[str, Any] = orjson.loads(reply.read())
    return document
