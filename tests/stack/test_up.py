"""`orchestrator up`: the one-machine stack on its embedded Redis, started and stopped
as a user would, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from orchestrator.stack.redis_server import free_port
from tests.live_stack import REPO, write_manifest
from tests.processes import children_of


def start_up(tmp_path: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env |= {
        "PYTHONPATH": str(REPO),
        "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5",
        "ORCHESTRATOR_GRACE_PERIOD": "5",
        "ORCHESTRATOR_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "orchestrator", "up", "--redis-port", str(port)]
    log = (tmp_path / "up.log").open("ab")
    return subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "data"), *args],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_until(condition: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("timed out")


def dispatch(url: str, manifest: Path) -> None:
    env = {**os.environ, "REDIS_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog", "default"],
        env=env, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def receipts(client: redis.Redis, batch: str) -> list[dict[str, object]]:
    return [orjson.loads(v) for v in client.hgetall(f"{{orc}}:receipts:{batch}").values()]


def test_up_runs_a_batch_and_stops_leaving_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    up = start_up(tmp_path, port, "--metal", "2", "--cloud", "2")
    client = redis.Redis(port=port)
    try:
        wait_until(
            lambda: client.scard("{orc}:workers:metal") and client.scard("{orc}:workers:cloud")
        )
        children = children_of(up.pid)
        assert len(children) >= 4  # redis, conductor, two workers
        lines = [{"task": "system.sleep", "args": [0.5]} for _ in range(6)]
        dispatch(f"redis://127.0.0.1:{port}/0", write_manifest(tmp_path / "up_01.jsonl", lines))
        wait_until(lambda: len(receipts(client, "up_01")) == 6)
        assert {r["pool"] for r in receipts(client, "up_01")} == {"metal", "cloud"}
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        client.close()
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def test_embedded_redis_keeps_queued_jobs_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    up = start_up(tmp_path, port, "--metal", "1", "--cloud", "1")
    client = redis.Redis(port=port)
    wait_until(lambda: client.scard("{orc}:workers:cloud"))
    lines = [{"task": "system.sleep", "args": [1.0]} for _ in range(6)]
    dispatch(f"redis://127.0.0.1:{port}/0", write_manifest(tmp_path / "kept_01.jsonl", lines))
    wait_until(lambda: len(receipts(client, "kept_01")) >= 1)
    up.send_signal(signal.SIGTERM)
    assert up.wait(30) == 0
    client.close()
    up = start_up(tmp_path, port, "--metal", "1", "--cloud", "1")
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: len(receipts(client, "kept_01")) == 6, timeout=40)
        assert {r["status"] for r in receipts(client, "kept_01")} == {"succeeded"}
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        client.close()
