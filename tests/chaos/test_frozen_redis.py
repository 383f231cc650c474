"""A Redis that stops answering: the server is frozen (SIGSTOP) for longer than every
timeout, as a hung host or a network partition looks from the other side — connections
stay open and nothing comes back.

Conductors and workers notice it (one `redis_unavailable` each), wait it out and go on
once it answers (one `redis_available`), losing nothing and running nothing twice that
had finished. And a process asked to stop meanwhile stops within a bound, in one line:
a worker within `grace_period` and a few seconds, its cut-short jobs left to recovery;
the conductor, the dashboard and `orchestrator up` likewise. Started during a freeze, a
service ends in the one line a refused Redis gives; `up`'s children, which it starts
with `--wait-for-redis`, wait it out. Each test freezes a Redis of its own, never the
session's, which other tests use at the same time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.stack.redis_server import RedisServer, free_port
from tests.live_stack import Stack, write_manifest

# Each freezes Redis for 12 s or more and times how processes stop: alone on the machine.
pytestmark = pytest.mark.chaos
FREEZE = 12.0  # seconds: past the 5 s reply timeout and the 7 s subscriber silence
GRACE = 3.0
JOBS = 160


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", port=free_port()) as server:
        yield server


@pytest.fixture
def frozen_stack(private_redis: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Stack]:
    run = Stack(private_redis.url, namespace, tmp_path, {"grace_period": str(GRACE)})
    try:
        yield run
    finally:
        resume(private_redis)  # whatever failed: the processes must be able to stop
        run.stop()


@contextmanager
def frozen(server: RedisServer) -> Iterator[float]:
    """Redis stopped dead for the block (the wall-clock time it froze); the test must
    not touch Redis inside (its client has no timeout)."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield time.time()
    finally:
        resume(server)


def resume(server: RedisServer) -> None:
    if server.pid is not None:
        with suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)


def start_batch(run: Stack, tmp_path: Path, seconds: float = 0.25) -> dict[str, Any]:
    """A conductor, two metal workers, and `JOBS` sleepers under way: the receipts that
    said succeeded before the freeze, by job id."""
    workers = [run.worker("metal", 4), run.worker("metal", 4)]
    run.conductor()
    lines = [{"task": "system.sleep", "args": [seconds]} for _ in range(JOBS)]
    run.dispatch(write_manifest(tmp_path / "frozen_01.jsonl", lines))
    run.wait_for(lambda: finished(run) >= 24, "a part of the batch")
    done = {r["job_id"]: r for r in run.receipts("frozen_01") if r["status"] == "succeeded"}
    return {"workers": workers, "succeeded": done}


def finished(run: Stack) -> int:
    return sum(r["status"] == "succeeded" for r in run.receipts("frozen_01"))


def assert_batch_done_once(run: Stack, before: dict[str, Any]) -> None:
    """Every job succeeded, and none whose receipt said so before the freeze ran again."""
    run.wait_for(
        lambda: finished(run) == JOBS,
        "every job after the freeze",
        timeout=90,
        deaths_expected=True,
        explain=lambda: str(Counter(r["status"] for r in run.receipts("frozen_01"))),
    )
    after = {r["job_id"]: r for r in run.receipts("frozen_01")}
    assert len(after) == JOBS
    assert all(after[job_id] == receipt for job_id, receipt in before.items())
    runs = Counter(
        event["job_id"]
        for process in run.processes
        for event in run.events(process, "job_succeeded")
    )
    assert all(runs[job_id] == 1 for job_id in before), {j: runs[j] for j in before}


def log_text(run: Stack, process: subprocess.Popen[bytes]) -> str:
    return run.logs[process.pid].read_text(errors="replace")


def stop_all_within(bounds: dict[str, tuple[subprocess.Popen[bytes], float]]) -> dict[str, float]:
    """SIGTERM each process at once: the seconds each took to exit, each within its bound
    (seconds), else the test fails."""
    for process, _ in bounds.values():
        process.send_signal(signal.SIGTERM)
    signalled, took = time.monotonic(), dict[str, float]()
    while len(took) < len(bounds):
        elapsed = time.monotonic() - signalled
        for name, (process, seconds) in bounds.items():
            if name not in took and process.poll() is not None:
                took[name] = round(elapsed, 1)
            elif name not in took and elapsed > seconds:
                pytest.fail(f"{name} still running {seconds:g} s after SIGTERM")
        time.sleep(0.05)
    return took


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@pytest.mark.serial  # timed: noticed and stopped within bounds
def test_a_frozen_redis_is_waited_out_losing_nothing(
    frozen_stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    run = frozen_stack
    before = start_batch(run, tmp_path)["succeeded"]
    with frozen(private_redis) as froze:
        time.sleep(FREEZE)
        thawed = time.time()

    assert_batch_done_once(run, before)
    assert all(process.poll() is None for process in run.processes)
    noticed = {}
    for process in run.processes:  # the conductor and both workers
        down = run.events(process, "redis_unavailable")
        back = run.events(process, "redis_available")
        assert len(down) == 1, (process.args, down)  # once, however many loops failed
        assert froze < at(down[0]) < thawed  # noticed while it lasted, with the reason
        noticed[run.logs[process.pid].stem] = round(at(down[0]) - froze, 1)
        assert "Timeout" in down[0]["error"], down[0]
        assert len(back) == 1, back
        assert at(back[0]) >= thawed
        assert back[0]["unavailable_for"] > 0
        assert "Traceback" not in log_text(run, process)
    print(f"\nRedis frozen {FREEZE:g} s: noticed after {noticed} s")


@pytest.mark.serial  # timed: noticed and stopped within bounds
def test_a_worker_stopped_during_a_freeze_leaves_within_its_grace_period(
    frozen_stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    run = frozen_stack
    started = start_batch(run, tmp_path)
    leaving, staying = started["workers"]
    with frozen(private_redis):
        time.sleep(1.0)
        took = stop_all_within({"the worker": (leaving, GRACE + 8)})["the worker"]
        time.sleep(max(0.0, FREEZE - 1.0 - took))
    print(f"\nworker stopped {took:.1f} s after SIGTERM, Redis frozen (grace {GRACE:g} s)")

    assert leaving.returncode == 0
    text = log_text(run, leaving)
    assert "Traceback" not in text, text[-3000:]
    assert len(run.events(leaving, "worker_stopped")) == 1
    assert_batch_done_once(run, started["succeeded"])  # the others take its jobs over
    assert staying.poll() is None


@pytest.mark.serial  # timed: noticed and stopped within bounds
def test_conductor_dashboard_and_up_stop_during_a_freeze(
    frozen_stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    run = frozen_stack
    conductor = run.conductor()
    port = free_port()
    web = run.start("web", "--port", str(port))
    up = run.start(
        "up", "--data-dir", str(tmp_path / "up"), "--metal", "2", "--cloud", "2",
        "--web-port", str(free_port()),
    )  # fmt: skip
    pools = [run.keys.workers("metal"), run.keys.workers("cloud")]
    run.wait_for(lambda: all(run.redis.scard(pool) for pool in pools), "up's workers")
    run.wait_for(lambda: b"dashboard:" in run.logs[web.pid].read_bytes(), "the dashboard")
    lines = [{"task": "system.sleep", "args": [20.0]} for _ in range(4)]
    run.dispatch(write_manifest(tmp_path / "long_01.jsonl", lines))
    run.wait_running("long_01", 4)  # up's workers are busy when the stop comes
    for path in ("/api/events", "/api/status"):  # an open page, and a read under way
        threading.Thread(
            target=read_quietly, args=(f"http://127.0.0.1:{port}{path}",), daemon=True
        ).start()
    time.sleep(0.5)

    with frozen(private_redis):
        time.sleep(1.0)
        # the conductor's hand-back gets 3 s; the dashboard's open pages 3 s; `up`
        # stops its conductor, then its workers (grace period, and a few seconds)
        took = stop_all_within(
            {"conductor": (conductor, 10), "web": (web, 10), "up": (up, 3 + GRACE + 12)}
        )
    print(f"\nstopped during a freeze, seconds after SIGTERM: {took}")

    assert conductor.returncode == 0
    assert web.returncode == 0  # a stop, not a death by the signal uvicorn raised again
    assert up.returncode == 0
    for process in (conductor, web, up):
        text = log_text(run, process)
        assert "Traceback" not in text, text[-3000:]
    assert len(run.events(conductor, "conductor_stopped")) == 1
    assert len(run.events(up, "stack_stopped")) == 1
    assert not run.events(up, "child_killed")  # each child stopped by itself, in time


def read_quietly(url: str) -> None:
    """A page's request; however it ends (the server stopping cuts it) is not the test's."""
    with suppress(Exception), urllib.request.urlopen(url, timeout=60) as reply:
        while reply.read(256):
            pass


def test_services_started_during_a_freeze_end_in_the_one_line_a_refused_redis_gives(
    frozen_stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    """Started while Redis is frozen, a worker, a conductor, the dashboard and `up` (on
    that external Redis) each end within seconds as they do when Redis refuses: exit
    69, one `orchestrator: error: cannot reach Redis …` line, no traceback, nothing
    recorded. Once Redis answers, the same commands start and run a batch."""
    run = frozen_stack
    commands = {
        "worker": ["worker", "--pool", "metal", "--concurrency", "2"],
        "conductor": ["conductor"],
        "web": ["web", "--port", str(free_port())],
        "up": ["up", "--data-dir", str(tmp_path / "up"), "--metal", "1", "--cloud", "1",
               "--web-port", str(free_port())],
    }  # fmt: skip
    with frozen(private_redis):
        started = {name: run.start(*args) for name, args in commands.items()}
        took = wait_all_exit(started, 20)  # the 5 s reply timeout, and a start on 2 cores
    print(f"\nstarted during a freeze, seconds to their one line: {took}")

    refused = run.command("worker", "--pool", "metal", "--redis-url", "redis://127.0.0.1:1/0")
    assert refused.returncode == 69
    assert refused.stderr.startswith("orchestrator: error: cannot reach Redis at ")
    for name, process in started.items():
        text = log_text(run, process)
        errors = [line for line in text.splitlines() if line.startswith("orchestrator: error:")]
        assert process.returncode == 69, (name, text[-2000:])
        assert errors == [
            f"orchestrator: error: cannot reach Redis at {private_redis.url}: "
            f"Timeout reading from 127.0.0.1:{private_redis.port}"
        ], (name, text[-2000:])
        assert "Traceback" not in text
    assert not (tmp_path / "up" / "stack.json").exists()
    # Their exit 69 was the point: the stack's watch for deaths is for what starts next
    # (it failed the wait below when the batch was not done at its first look).
    for process in started.values():
        run.processes.remove(process)

    run.worker("metal", 2)
    run.conductor()
    run.dispatch(
        write_manifest(tmp_path / "thawed_01.jsonl", [{"task": "system.echo", "args": [1]}] * 4)
    )
    receipts = run.wait_for_receipts("thawed_01", 4)
    assert {r["status"] for r in receipts} == {"succeeded"}


def test_up_whose_children_meet_a_freeze_as_they_start_waits_it_out(
    frozen_stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    """`up` saw its external Redis answer and started its children; Redis froze as they
    started. Each waits for it (`redis_unavailable` once, then `redis_available`) instead
    of exiting 69 after `up` said ready; then the stack runs a batch and stops with 0."""
    run = frozen_stack
    up = run.start(
        "up", "--data-dir", str(tmp_path / "up"), "--metal", "1", "--cloud", "1",
        "--web-port", str(free_port()),
    )  # fmt: skip
    run.wait_for(lambda: b'"stack_started"' in run.logs[up.pid].read_bytes(), "up's children")
    with frozen(private_redis):
        time.sleep(FREEZE - 4)  # past the 5 s their first try waits for a reply
    pools = [run.keys.workers("metal"), run.keys.workers("cloud")]
    run.wait_for(lambda: all(run.redis.scard(pool) for pool in pools), "up's workers", 30)
    run.dispatch(
        write_manifest(tmp_path / "later_01.jsonl", [{"task": "system.echo", "args": [1]}] * 4)
    )
    assert {r["status"] for r in run.wait_for_receipts("later_01", 4)} == {"succeeded"}
    assert up.poll() is None
    run.stop_process(up)
    assert up.returncode == 0
    text = log_text(run, up)
    assert "Traceback" not in text, text[-3000:]
    assert "orchestrator: error:" not in text, text[-3000:]
    assert not run.events(up, "child_exited")
    waited = run.events(up, "redis_unavailable")
    assert waited
    assert len(waited) == len(run.events(up, "redis_available")), waited


def test_a_service_waiting_for_redis_at_its_start_stops_on_sigterm_with_0(
    frozen_stack: Stack, private_redis: RedisServer
) -> None:
    """`--wait-for-redis` (how `up` starts its children): a stop asked for while it
    waits ends it at once, exit 0, one line, nothing started."""
    run = frozen_stack
    with frozen(private_redis):
        worker = run.start("worker", "--pool", "metal", "--wait-for-redis")
        run.wait_for(lambda: bool(run.events(worker, "redis_unavailable")), "the wait", 20)
        stop_all_within({"the worker": (worker, 3)})
    assert worker.returncode == 0
    assert len(run.events(worker, "stopped_waiting_for_redis")) == 1
    assert not run.events(worker, "worker_started")
    assert "Traceback" not in log_text(run, worker)


def wait_all_exit(processes: dict[str, subprocess.Popen[bytes]], bound: float) -> dict[str, float]:
    """Seconds each process took to exit by itself, each within `bound`."""
    begun, took = time.monotonic(), dict[str, float]()
    while len(took) < len(processes):
        elapsed = time.monotonic() - begun
        for name, process in processes.items():
            if name not in took and process.poll() is not None:
                took[name] = round(elapsed, 1)
        if elapsed > bound:
            pytest.fail(f"still running {bound:g} s into the freeze: {set(processes) - set(took)}")
        time.sleep(0.05)
    return took
