"""Real processes for end-to-end tests: workers and conductors of the `orchestrator`
command against the session's Redis, with their logs kept for assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from orchestrator.keys import Keys

REPO = Path(__file__).resolve().parents[1]


class Stack:
    def __init__(self, url: str, namespace: str, directory: Path, settings: dict[str, Any]) -> None:
        self.url = url
        self.keys = Keys(namespace)
        self.directory = directory
        self.redis = redis.Redis.from_url(url)
        self.env = {
            **os.environ,
            "REDIS_URL": url,
            "ORCHESTRATOR_NAMESPACE": namespace,
            "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5",
            "ORCHESTRATOR_JOB_TIMEOUT": "30",
            "ORCHESTRATOR_GRACE_PERIOD": "5",
            "ORCHESTRATOR_RETRY_DELAY": "0.1",
            "ORCHESTRATOR_TASK_PACKAGES": '["workers.tasks", "tests.fixtures.tasks"]',
            "ORCHESTRATOR_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        for name, value in settings.items():
            self.env[f"ORCHESTRATOR_{name.upper()}"] = (
                value if isinstance(value, str) else orjson.dumps(value).decode()
            )
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"{args[0]}-{len(self.logs)}.log"  # one a process, ever
        with log.open("wb") as out:  # the child writes to its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", *args],
                env=self.env, cwd=self.directory, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(process)
        self.logs[process.pid] = log
        return process

    def worker(self, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
        before = self.redis.smembers(self.keys.workers(pool))
        process = self.start("worker", "--pool", pool, "--concurrency", str(concurrency))
        self.wait_for(
            lambda: bool(self.redis.smembers(self.keys.workers(pool)) - before),
            f"{pool} worker",
            deaths_expected=True,
        )
        return process

    def conductor(self) -> subprocess.Popen[bytes]:
        return self.start("conductor")

    def events(self, process: subprocess.Popen[bytes], event: str) -> list[dict[str, Any]]:
        lines = self.logs[process.pid].read_bytes().splitlines()
        parsed = [orjson.loads(line) for line in lines if line.startswith(b"{")]
        return [line for line in parsed if line.get("event") == event]

    def receipts(self, batch: str) -> list[dict[str, Any]]:
        raw = self.redis.hgetall(self.keys.receipts(batch))
        return [orjson.loads(value) for value in raw.values()]

    def wait_for_receipts(
        self, batch: str, count: int, timeout: float = 60
    ) -> list[dict[str, Any]]:
        def settled() -> bool:
            done = [r for r in self.receipts(batch) if r["status"] in ("succeeded", "failed")]
            return len(done) >= count

        self.wait_for(settled, f"{count} receipts of {batch}", timeout)
        return self.receipts(batch)

    def wait_for(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout: float = 30,
        *,
        deaths_expected: bool = False,
        explain: Callable[[], str] | None = None,
    ) -> None:
        """Poll `condition` until it holds; a timeout names `what` and, with `explain`,
        the state it found and the tail of every process's log, so that a failure seen
        once (in CI) can be diagnosed from its output alone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            for process in [] if deaths_expected else self.processes:
                if process.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    text = self.logs[process.pid].read_text()
                    raise AssertionError(
                        f"process died with {process.poll()}: {text[:1500]} … {text[-3000:]}"
                    )
            time.sleep(0.05)
        if explain is None:
            raise AssertionError(f"timed out waiting for {what}")
        try:
            found = explain()
        except Exception as exc:  # the timeout must still be reported
            found = f"(explaining failed: {exc!r})"
        tails = []
        for process in self.processes:
            log = self.logs[process.pid]
            text = log.read_text(errors="replace")[-2500:]
            tails.append(f"--- {log.name} (exit {process.poll()}) ---\n{text}")
        raise AssertionError(f"timed out waiting for {what}: {found}\n" + "\n".join(tails))

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`orchestrator ARGS` as a user runs it against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env, cwd=self.directory, capture_output=True, text=True, check=False,
            timeout=120,
        )  # fmt: skip

    def wait_running(self, batch: str, count: int) -> None:
        """Until `count` jobs of `batch` are running (their runs in `Keys.running`)."""
        self.wait_for(
            lambda: self.redis.hlen(self.keys.running(batch)) == count,
            f"{count} of {batch} running",
        )

    def dispatch(self, manifest: Path, backlog: str = "backlog:default") -> None:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog", backlog],
            env=self.env, capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()

    def stop_process(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM one process and wait for it to exit."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(15)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.close()


def write_manifest(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    edges = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best
