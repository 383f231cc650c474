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

from orchestrator.connection import open_client
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.registry import default_registry
from orchestrator.stack.redis_server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k lines, no 1M RSS run")
    parser.add_argument("--lines", type=int, default=None, help="lines in the timed manifest")
    parser.add_argument("--baseline-jobs", type=int, default=5_000, help="enqueue_job calls")
    parser.add_argument("--pairs", type=int, default=5, help="dispatch/baseline pairs timed")
    options = parser.parse_args()
    lines = options.lines or (20_000 if options.quick else 100_000)
    configure_logging("warning")

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        work = Path(tmp)
        manifest = write_manifest(work / "bench.jsonl", lines)
        # This machine's CPU speed drifts by up to 2x from second to second, so each
        # dispatch is paired with a baseline timed right after it, and the ratio is
        # taken per pair.
        ours, theirs = [], []
        for pair in range(options.pairs):
            ours.append(anyio.run(time_dispatch, server.url, manifest, f"bench{pair}"))
            theirs.append(anyio.run(time_enqueue_job, server.url, options.baseline_jobs, pair))
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
        print("| measure | median | best |\n|---|---|---|")
        print(f"| dispatch, {lines:,}-line manifest | {_median(ours)} jobs/s | {max(ours):,.0f} |")
        print(
            f"| arq enqueue_job loop, {options.baseline_jobs:,} jobs "
            f"| {_median(theirs)} jobs/s | {max(theirs):,.0f} |"
        )
        print(f"| ratio per pair ({options.pairs} pairs) | {statistics.median(ratios):.1f}x "
              f"| {max(ratios):.1f}x |")  # fmt: skip
        if not options.quick:
            big = write_manifest(work / "bench_1m.jsonl", 1_000_000)
            seconds, peak_mb = dispatch_subprocess(server.url, big)
            print(f"| `orchestrator dispatch`, 1,000,000 lines | {seconds:.1f} s | |")
            print(f"| peak RSS of that process | {peak_mb:.0f} MB | |")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}"


def write_manifest(path: Path, lines: int) -> Path:
    with path.open("wb") as file:
        for index in range(lines):
            line = {
                "task": "system.echo",
                "args": [f"job {index}", index],
                "meta": {"index": index},
            }
            file.write(orjson.dumps(line) + b"\n")
    return path


async def time_dispatch(url: str, manifest: Path, namespace: str) -> float:
    registry = default_registry()
    async with open_client(url) as redis:
        keys = Keys(namespace)
        started = time.perf_counter()
        result = await dispatch_manifest(redis, keys, manifest, "backlog:bench", registry)
        elapsed = time.perf_counter() - started
        assert result.queued == result.total, result
        assert await redis.llen(keys.backlog("backlog:bench")) == result.total
        await redis.delete(keys.backlog("backlog:bench"))
        return result.total / elapsed


async def time_enqueue_job(url: str, jobs: int, pair: int) -> float:
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings, job_serializer=orjson.dumps, job_deserializer=orjson.loads)
    try:
        started = time.perf_counter()
        for index in range(jobs):
            job = await pool.enqueue_job(
                "system.echo", f"job {index}", index, _job_id=f"baseline{pair}:{index}"
            )
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
