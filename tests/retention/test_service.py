"""Retention in the running service: a conductor settles, archives and removes a finished
batch by itself, says so in one line with its size, counts it (and Redis memory by part)
in /metrics, and `verify` still answers from the archive."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from orchestrator.stack.redis_server import free_port
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest


def test_the_conductor_prunes_a_settled_batch_once_its_retention_is_over(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    port = free_port()
    run = stack(batch_retention="1s", prune_interval="0.3")
    run.worker("metal", 4)
    run.env["ORCHESTRATOR_METRICS_PORT"] = str(port)  # the conductor's only
    conductor = run.conductor()
    lines = [{"task": "system.echo", "args": [n]} for n in range(40)]
    run.dispatch(write_manifest(tmp_path / "daily_01.jsonl", lines))
    run.wait_for(lambda: bool(run.events(conductor, "batch_pruned")), "the batch pruned", 60)
    pruned = run.events(conductor, "batch_pruned")
    assert len(pruned) == 1
    assert pruned[0]["batch"] == "daily_01"
    assert pruned[0]["receipts"] == 40
    assert pruned[0]["bytes"] > 0
    assert pruned[0]["archive_bytes"] > 0
    assert run.redis.exists(run.keys.batch("daily_01"), run.keys.receipts("daily_01")) == 0
    assert (tmp_path / "data" / "archive" / "daily_01.jsonl.gz").is_file()
    verified = run_cli("verify", "--batch", "daily_01")
    assert verified.code == 0, verified.err
    assert "all 40 jobs succeeded" in verified.out
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert "orchestrator_pruned_batches_total 1.0" in metrics
    assert f"orchestrator_pruned_bytes_total {float(pruned[0]['bytes'])}" in metrics
    for part in ("queues", "receipts", "dead_letters"):
        assert f'orchestrator_redis_memory_bytes{{part="{part}"}}' in metrics
