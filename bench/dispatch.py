"""Dispatch throughput and memory, against arq's own enqueue loop in the same run.

    python bench/dispatch.py            # 100k-line manifest, 1M-line RSS check
    python bench/dispatch.py --quick    # 20k lines, no 1M run

Starts a private Redis (as the tests do), so it never touches a server of yours.
Reports: jobs/s of `dispatch_manifest` on a 100k-line manifest (validation, spooling
and queueing included), jobs/s of a loop of arq `enqueue_job` calls (JSON serializer)
on the same server, their ratio, and the peak RSS of `orchestrator dispatch` on a
1,000,000-line manifest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import orjson
from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis

from orchestrator.dispatch import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.redis_server import RedisServer
from orchestrator.registry import default_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run: 20k lines, no 1M RSS run")
    parser.add_argument("--lines", type=int, default=None, help="lines in the timed manifest")
    parser.add_argument("--baseline-jobs", type=int, default=20_000, help="enqueue_job calls timed")
    parser.add_argument("--repeat", type=int, default=3, help="timed dispatches (median reported)")
    options = parser.parse_args()
    lines = options.lines or (20_000 if options.quick else 100_000)

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        work = Path(tmp)
        manifest = write_manifest(work / "bench_100k.jsonl", lines)
        rates = anyio.run(time_dispatch, server.url, manifest, options.repeat)
        baseline = anyio.run(time_enqueue_job, server.url, options.baseline_jobs)
        ours = statistics.median(rates)
        print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
        print(f"| measure | value |\n|---|---|")
        print(f"| dispatch, {lines:,} lines (median of {options.repeat}) | {ours:,.0f} jobs/s |")
        print(f"| arq enqueue_job loop, {options.baseline_jobs:,} jobs | {baseline:,.0f} jobs/s |")
        print(f"| ratio | {ours / baseline:.1f}x |")
        if not options.quick:
            big = write_manifest(work / "bench_1m.jsonl", 1_000_000)
            seconds, peak_mb = dispatch_subprocess(server.url, big)
            print(f"| `orchestrator dispatch`, 1,000,000 lines | {seconds:.1f} s, {1e6 / seconds:,.0f} jobs/s |")
            print(f"| peak RSS of that process | {peak_mb:.0f} MB |")


def write_manifest(path: Path, lines: int) -> Path:
    with path.open("wb") as file:
        for index in range(lines):
            line = {"task": "system.echo", "args": [f"job {index}", index], "meta": {"index": index}}
            file.write(orjson.dumps(line) + b"\n")
    return path


async def time_dispatch(url: str, manifest: Path, repeat: int) -> list[float]:
    rates = []
    registry = default_registry()
    async with Redis.from_url(url) as redis:
        for attempt in range(repeat):
            keys = Keys(f"bench{attempt}")
            started = time.perf_counter()
            result = await dispatch_manifest(redis, keys, manifest, "backlog:bench", registry)
            elapsed = time.perf_counter() - started
            assert result.queued == result.total, result
            assert await redis.llen(keys.backlog("backlog:bench")) == result.total
            rates.append(result.total / elapsed)
    return rates


async def time_enqueue_job(url: str, jobs: int) -> float:
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings, job_serializer=orjson.dumps, job_deserializer=orjson.loads)
    try:
        started = time.perf_counter()
        for index in range(jobs):
            job = await pool.enqueue_job("system.echo", f"job {index}", index, _job_id=f"baseline:{index}")
            assert job is not None
        return jobs / (time.perf_counter() - started)
    finally:
        await pool.aclose()


def dispatch_subprocess(url: str, manifest: Path) -> tuple[float, float]:
    """Run the real CLI and read its own peak RSS from wait4 (Linux reports KiB)."""
    env = {**os.environ, "ORCHESTRATOR_NAMESPACE": "bench1m"}
    command = [sys.executable, "-m", "orchestrator", "--redis-url", url]
    command += ["dispatch", str(manifest), "--backlog", "bench"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"orchestrator dispatch failed with exit {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


if __name__ == "__main__":
    main()
