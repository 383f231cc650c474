"""A Redis that reaches `maxmemory` under `noeviction` answers writes with OOM errors:
dispatch refuses in one line and queues nothing, workers keep their jobs and write their
receipts once there is room, the conductor says so once — and nothing is lost once
memory is freed. Against a private redis-server whose maxmemory the test turns down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.keys import Keys
from orchestrator.stack.redis_server import RedisServer
from tests.live_stack import REPO, Stack, write_manifest


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as started:
        yield started


def fill(client: redis.Redis) -> None:
    """Make Redis full, and keep it so: maxmemory well under what it uses now (policy
    noeviction), so that freeing a little (a job's arq keys deleted) does not let a
    write through."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(max(used // 2, 1)))


def make_room(client: redis.Redis) -> None:
    client.config_set("maxmemory", "0")


def dispatch(
    url: str, namespace: str, manifest: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace,
           "PYTHONPATH": str(REPO)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog", "stress"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_dispatch_to_a_full_redis_refuses_in_one_line_and_queues_nothing(
    server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(server.url)
    keys = Keys(namespace)
    manifest = write_manifest(
        tmp_path / "full_01.jsonl", [{"task": "system.echo", "args": [n]} for n in range(3000)]
    )
    try:
        fill(client)
        refused = dispatch(server.url, namespace, manifest, tmp_path)
        assert refused.returncode == 69, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "Redis is full" in lines[0]
        assert "nothing was queued" in lines[0]
        assert client.llen(keys.backlog("backlog:stress")) == 0
        assert client.exists(keys.batch("full_01")) == 0
        assert client.keys(f"{keys.root}:staging:*") == []
        make_room(client)
        done = dispatch(server.url, namespace, manifest, tmp_path)
        assert done.returncode == 0, done.stderr
        assert client.llen(keys.backlog("backlog:stress")) == 3000
    finally:
        make_room(client)
        client.close()


def test_jobs_finishing_on_a_full_redis_are_kept_and_written_once_it_has_room(
    server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    run = Stack(server.url, namespace, tmp_path, {})
    client = redis.Redis.from_url(server.url)
    try:
        worker = run.worker("metal", 4)
        conductor = run.conductor()
        lines = [{"task": "system.sleep", "args": [1.0]} for _ in range(40)]
        run.dispatch(write_manifest(tmp_path / "squeezed_01.jsonl", lines))
        # Full while jobs run (each for a second): their ends meet the full Redis.
        run.wait_for(lambda: run.redis.hlen(run.keys.running("squeezed_01")) >= 2, "jobs running")
        fill(client)
        run.wait_for(lambda: bool(run.events(worker, "receipt_deferred")), "a receipt deferred")
        time.sleep(3.0)  # full for a while: heartbeats and rounds fail too
        make_room(client)
        run.wait_for(
            lambda: sum(r["status"] == "succeeded" for r in run.receipts("squeezed_01")) == 40,
            "every job once Redis has room",
            timeout=120,
        )
        assert all(process.poll() is None for process in run.processes)
        assert len(run.receipts("squeezed_01")) == 40
        assert len(run.events(conductor, "redis_full")) <= 1
    finally:
        make_room(client)
        client.close()
        run.stop()
