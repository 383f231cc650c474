"""`orchestrator status`: what a user sees of a running service, against real processes.

The spillover test asserts on the JSON a script would read and on the words a person
would read, while metal is full and cloud takes the rest; the others pin the parts that
need no workers (receipt counting, rate-limit tokens, the live view's exit, the header
naming the Redis read, batch names, jobs waiting for a worker). How batches count dead
letters is in test_batches.py.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import time
from fcntl import ioctl
from pathlib import Path
from termios import TIOCSWINSZ
from typing import Any

import orjson
import redis.asyncio
from rich.console import Console

from orchestrator.connection import RedisSource
from orchestrator.keys import Keys
from orchestrator.settings import load_settings
from orchestrator.stack.record import StackLock, StackRecord
from orchestrator.status.snapshot import StatusReader, to_json
from orchestrator.status.view import render
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import REPO, write_manifest


def status_json(run_cli: CliRunner) -> dict[str, Any]:
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    parsed: dict[str, Any] = orjson.loads(result.out)
    return parsed


def pools(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {pool["name"]: pool for pool in document["pools"]}


def test_status_shows_metal_full_and_cloud_taking_the_spillover(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    run = stack()
    run.worker("metal", 2)
    run.worker("cloud", 4)
    run.conductor()
    sleepers = [{"task": "system.sleep", "args": [4]} for _ in range(6)]
    run.dispatch(write_manifest(tmp_path / "spill_01.jsonl", sleepers))

    def spilling() -> bool:
        metal, cloud = pools(status_json(run_cli)).values()
        return bool(metal["running"] == 2 and cloud["running"] > 0)

    run.wait_for(spilling, "metal running 2 and cloud running jobs", timeout=5)
    document = status_json(run_cli)
    metal, cloud = pools(document)["metal"], pools(document)["cloud"]
    assert (metal["slots"], metal["in_flight"], metal["free"]) == (2, 2, 0)
    assert (cloud["slots"], cloud["in_flight"]) == (4, 4)
    assert [len(metal["workers"]), len(cloud["workers"])] == [1, 1]
    assert {b["name"]: b["depth"] for b in document["backlogs"]} == {"backlog:default": 0}
    assert len(document["conductor"]["live"]) == 1
    (batch,) = document["batches"]
    assert (batch["id"], batch["total"], batch["queued"], batch["dispatched"]) == (
        "spill_01", 6, 6, True,
    )  # fmt: skip
    assert batch["done"] + batch["failed"] + batch["pending"] == 6
    shown = run_cli("status")
    assert shown.code == 0
    assert "spillover: metal full, cloud runs 4" in shown.out

    run.wait_for_receipts("spill_01", 6, timeout=15)
    (batch,) = status_json(run_cli)["batches"]
    assert (batch["done"], batch["failed"], batch["pending"], batch["settled"]) == (6, 0, 0, True)
    assert [p["in_flight"] for p in status_json(run_cli)["pools"]] == [0, 0]


def test_a_jobs_start_shows_in_running_long_before_the_next_heartbeat(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    """Heartbeats 10 s apart: the pool's and the worker's `running` still count a job
    within about a second of its start (it once waited for the next beat)."""
    run = stack(heartbeat_interval=10)
    run.worker("metal", 2)
    run.conductor()
    sleepers = [{"task": "system.sleep", "args": [6]} for _ in range(2)]
    run.dispatch(write_manifest(tmp_path / "shown_01.jsonl", sleepers))
    run.wait_running("shown_01", 2)

    def shown() -> bool:
        metal = pools(status_json(run_cli))["metal"]
        return bool(metal["running"] == 2 and metal["workers"][0]["running"] == 2)

    # The next beat is 7-9 s away (the first came as the worker started): well beyond.
    run.wait_for(shown, "running 2 in status", timeout=4)
    assert pools(status_json(run_cli))["metal"]["in_flight"] == 2


def test_one_shot_status_lists_every_pool_even_without_workers(
    redis_url: str, run_cli: CliRunner
) -> None:
    result = run_cli("status")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()]
    for pool in ("metal", "cloud"):  # workers, slots, in flight, running, queued, free, beat
        assert [pool, "0", "0", "0", "0", "0", "0", "-", "no", "workers"] in rows
    assert "metal has no workers, nothing running" in result.out


async def test_a_pools_prefetch_and_finish_rate_come_from_its_capacity_counters(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """What the conductors allow a pool beyond its free slots, as they size it."""
    reader = StatusReader(async_redis, load_settings())
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(render(await reader.read(), width=120))
    assert "prefetch" not in console.export_text()  # a column only when some pool has one
    await async_redis.hset(keys.capacity("metal"), mapping={"prefetch": 3, "rate": "120.500"})
    snapshot = await reader.read()
    document = orjson.loads(to_json(snapshot))
    metal, cloud = pools(document)["metal"], pools(document)["cloud"]
    assert (metal["prefetch"], metal["finish_rate"]) == (3, 120.5)
    assert (cloud["prefetch"], cloud["finish_rate"]) == (0, 0.0)
    console.print(render(snapshot, width=120))
    table = console.export_text()
    assert "prefetch" in table
    assert re.search(r"^metal +0 +0 +0 +0 +0 +0 +3 ", table, re.M), table


def test_status_without_redis_is_one_line_and_exit_69(run_cli: CliRunner) -> None:
    result = run_cli("status", "--json")
    assert result.code == 69
    assert result.err.startswith("orchestrator: error: cannot reach Redis")


async def test_receipts_of_big_batches_are_counted_in_bounded_steps_then_kept(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    statuses = ["succeeded"] * 1000 + ["failed"] * 150 + ["retrying"] * 50
    await seed_batch(async_redis, keys, "big_01", statuses, total=1250)
    await seed_batch(async_redis, keys, "big_02", ["succeeded"] * 900, total=900)
    reader = StatusReader(async_redis, load_settings(), receipt_budget=400)
    first = {b.id: b for b in (await reader.read()).batches}
    assert not first["big_01"].counts_exact
    assert not first["big_02"].counts_exact
    batches = {b.id: b for b in (await reader.read_exact()).batches}
    big_01, big_02 = batches["big_01"], batches["big_02"]
    assert (big_01.done, big_01.failed, big_01.retrying, big_01.pending) == (1000, 150, 50, 100)
    assert (big_01.receipts, big_01.counts_exact, big_01.settled) == (1200, True, False)
    assert (big_02.done, big_02.pending, big_02.settled) == (900, 0, True)

    await seed_batch(async_redis, keys, "big_01", ["succeeded"] * 100, first=1150)
    await async_redis.delete(keys.receipts("big_02"))  # settled: never read again
    batches = {b.id: b for b in (await reader.read_exact()).batches}
    big_01, big_02 = batches["big_01"], batches["big_02"]
    assert (big_01.done, big_01.failed, big_01.pending, big_01.settled) == (1100, 150, 0, True)
    assert (big_02.done, big_02.receipts) == (900, 0)


async def test_rate_limit_tokens_follow_the_bucket_arrival_time(
    async_redis: redis.asyncio.Redis, keys: Keys, monkeypatch: Any
) -> None:
    limits = {"task:system.echo": {"rate": 5, "burst": 3}, "pool:cloud": {"rate": 1, "burst": 2}}
    monkeypatch.setenv("ORCHESTRATOR_RATE_LIMITS", orjson.dumps(limits).decode())
    seconds, micros = await async_redis.time()
    # Two tokens spent (TAT 0.4 s ahead at 5/s) on one bucket; the other never used.
    await async_redis.set(keys.bucket("task:system.echo"), f"{seconds + micros / 1e6 + 0.4:.6f}")
    snapshot = await StatusReader(async_redis, load_settings()).read()
    after, after_micros = await async_redis.time()
    # The bucket refills at 5/s while the read runs: a loaded machine takes a while.
    elapsed = after + after_micros / 1e6 - (seconds + micros / 1e6)
    echo, cloud = snapshot.rate_limits
    assert (echo.name, echo.burst, cloud.name) == ("task:system.echo", 3, "pool:cloud")
    assert 0.99 <= echo.tokens <= 1.01 + 5 * elapsed
    assert 0.39 - elapsed <= echo.full_in <= 0.4
    assert (cloud.tokens, cloud.full_in) == (2.0, 0.0)


def test_watch_draws_the_pools_and_exits_0_on_ctrl_c(redis_url: str) -> None:
    watch, leader = start_watch(80)
    screen = read_until(leader, lambda text: text.count(b"no workers") >= 2, seconds=10)
    time.sleep(0.5)  # a few redraws
    screen += stop_watch(watch, leader)
    assert b"metal" in screen
    assert b"cloud" in screen
    assert b"Traceback" not in screen


def test_watch_header_names_the_redis_it_reads_and_why(redis_url: str) -> None:
    """The live view says which Redis it draws, as the one-shot view does."""
    watch, leader = start_watch(120)
    screen = read_until(leader, lambda text: b"(from REDIS_URL)" in text, seconds=10)
    screen += stop_watch(watch, leader)
    assert f"{redis_url} (from REDIS_URL)".encode() in screen


def test_status_header_and_json_name_the_redis_and_why(
    redis_url: str, run_cli: CliRunner, monkeypatch: Any
) -> None:
    """Whoever reads `status` learns which Redis it shows and where that URL came from."""
    shown = run_cli("status")
    assert shown.code == 0, shown.err
    first, second = shown.out.splitlines()[:2]
    assert first.startswith("orchestrator status · namespace ")
    assert second == f"{redis_url} (from REDIS_URL)"  # 80 columns: a line of its own
    assert status_json(run_cli)["redis"] == {"url": redis_url, "origin": "REDIS_URL", "detail": ""}

    monkeypatch.delenv("REDIS_URL")  # now the stack a running `orchestrator up` recorded
    monkeypatch.setenv("COLUMNS", "200")
    lock = StackLock(Path("data"))
    lock.acquire()
    record = StackRecord(redis_url, up_pid=os.getpid(), started_at=time.time(), data_dir="data")
    lock.write(record)
    try:
        shown = run_cli("status")
        document = status_json(run_cli)
    finally:
        lock.release()
    assert shown.code == 0, shown.err
    header = shown.out.splitlines()[0].rstrip()
    assert header.endswith(f" · {redis_url} (from ./data/stack.json, {record.describe()})")
    assert document["redis"] == {
        "url": redis_url, "origin": "./data/stack.json", "detail": record.describe()
    }  # fmt: skip


async def test_status_json_never_shows_the_redis_password(
    async_redis: redis.asyncio.Redis,
) -> None:
    """A password in the URL is redacted before it reaches the snapshot."""
    source = RedisSource("redis://ops:hunter2@db.internal:6380/0", "REDIS_URL")
    snapshot = await StatusReader(async_redis, load_settings(), source=source).read()
    document = orjson.loads(to_json(snapshot))
    assert document["redis"]["url"] == "redis://ops:***@db.internal:6380/0"
    assert b"hunter2" not in to_json(snapshot)


def test_batch_names_use_the_width_there_is_and_keep_their_end_when_cut(
    sync_redis: Any, keys: Keys, run_cli: CliRunner, monkeypatch: Any
) -> None:
    """Two batches differing only in their last characters never look the same."""
    stem = "system_test_stress_supervisor_2024_05_01_night_run"
    for n, suffix in enumerate(("_02", "_03")):
        sync_redis.zadd(keys.batches, {stem + suffix: time.time() + n})
        sync_redis.hset(keys.batch(stem + suffix), mapping={"total": 2, "queued": 2})

    monkeypatch.setenv("COLUMNS", "200")
    wide = run_cli("status")
    assert wide.code == 0, wide.err
    assert [line.split()[0] for line in wide.out.splitlines() if stem in line] == [
        stem + "_03", stem + "_02",
    ]  # fmt: skip

    monkeypatch.setenv("COLUMNS", "80")
    narrow = run_cli("status")
    assert narrow.code == 0, narrow.err
    assert max(len(line) for line in narrow.out.splitlines()) <= 80
    names = [line.split()[0] for line in narrow.out.splitlines() if line.startswith("system_")]
    assert len(names) == 2
    assert names[0].endswith("night_run_03")
    assert names[1].endswith("night_run_02")
    assert all("…" in name and len(name) >= 24 for name in names)


def test_jobs_waiting_for_a_worker_that_runs_their_task_are_shown_with_since_when(
    redis_url: str, sync_redis: Any, keys: Keys, run_cli: CliRunner
) -> None:
    """Parked jobs are named by task, counted, and aged, in the view and in --json."""
    seconds, micros = sync_redis.time()
    since = seconds + micros / 1e6 - 72.2
    sync_redis.zadd(keys.no_worker_tasks, {"image.process": since * 1000})
    sync_redis.rpush(keys.no_worker("image.process"), *([b'{"id": "j"}'] * 3))
    for n in range(12):  # more batches than an 80x24 screen holds besides
        sync_redis.zadd(keys.batches, {f"batch_{n:02}": time.time() + n})
        sync_redis.hset(keys.batch(f"batch_{n:02}"), mapping={"total": 1, "queued": 1})

    document = status_json(run_cli)
    assert document["no_worker"] == {"image.process": {"jobs": 3, "since": round(since, 3)}}

    shown = run_cli("status")
    assert shown.code == 0, shown.err
    assert re.search(
        r"^waiting for a worker that runs image\.process: 3 jobs, since 1m1[23]s$",
        shown.out,
        re.MULTILINE,
    )
    lines = shown.out.splitlines()
    assert len(lines) <= 23  # the default 10 batches, and a prompt, on 80x24
    assert max(len(line) for line in lines) <= 80


def start_watch(columns: int) -> tuple[subprocess.Popen[bytes], int]:
    leader, follower = pty.openpty()
    ioctl(follower, TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    watch = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "status", "--watch", "--interval", "0.2"],
        stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    return watch, leader


def stop_watch(watch: subprocess.Popen[bytes], leader: int) -> bytes:
    """Ctrl-C, which must end the view with exit 0; returns what it drew meanwhile."""
    watch.send_signal(signal.SIGINT)
    assert watch.wait(10) == 0
    screen = read_until(leader, lambda _: False, seconds=0.3)
    os.close(leader)
    return screen


def read_until(fd: int, done: Any, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while not done(seen) and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            seen += chunk
    return seen


async def seed_batch(
    client: redis.asyncio.Redis, keys: Keys, batch: str, statuses: list[str], *, total: int = 0,
    first: int = 0,
) -> None:  # fmt: skip
    receipts = {
        f"{batch}:{first + n}": orjson.dumps({"job_id": f"{batch}:{first + n}", "status": status})
        for n, status in enumerate(statuses)
    }
    await client.hset(keys.receipts(batch), mapping=receipts)
    if total:
        record = {"total": total, "queued": total, "complete": 1, "backlog": "backlog:default"}
        await client.hset(keys.batch(batch), mapping=record)
        await client.zadd(keys.batches, {batch: time.time()})
