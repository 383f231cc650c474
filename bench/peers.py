"""This project end to end against its peers: raw arq and SAQ, on one private Redis.

    pip install -e '.[bench]'         # SAQ
    python bench/peers.py             # the full run (a minute or two)
    python bench/peers.py --quick     # smaller batches

The same no-op task (`system.echo` of one argument), the same concurrency (100 jobs at
once in one worker process), from the first submission to the last job done:

- **ours**: `dispatch` of a manifest → a conductor process → one worker process
  (`orchestrator worker --concurrency 100`), done when every receipt is written;
- **raw arq**: concurrent `enqueue_job` calls → one arq worker process (`max_jobs` 100,
  `poll_delay` 10 ms, JSON), done when every result key exists;
- **SAQ**: concurrent `enqueue` calls → one SAQ worker process (`concurrency` 100),
  done when its incomplete set is empty.

Each system runs `--runs` times, interleaved, so that a busy spell of the machine is
shared; the table gives medians and each system's ratio to the faster peer. Every
process is a child of this one and is stopped without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
from arq.worker import Worker, func

from bench.conductor import manifest
from orchestrator.connection import open_arq, open_client
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.registry import default_registry
from orchestrator.stack.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 100
SUBMITTERS = 50  # concurrent enqueue calls for the peers, whose API enqueues one job a call
ARQ_POLL = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("--runs", type=int, default=None, help="runs of each system")
    parser.add_argument("--arq-worker", nargs=2, metavar=("URL", "QUEUE"), help=argparse.SUPPRESS)
    parser.add_argument("--saq-worker", nargs=2, metavar=("URL", "NAME"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.arq_worker:
        quietly(lambda: arq_worker(*options.arq_worker))
        return
    if options.saq_worker:
        quietly(lambda: saq_worker(*options.saq_worker))
        return
    configure_logging("warning")
    jobs = 2_000 if options.quick else 6_000
    runs = options.runs or (2 if options.quick else 3)
    systems: dict[str, Callable[[str, Path, int], float]] = {
        "ours: dispatch → conductor → worker": ours_seconds,
        f"raw arq (poll {ARQ_POLL * 1000:.0f} ms)": arq_seconds,
        "SAQ": saq_seconds,
    }
    seen: dict[str, list[float]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for _ in range(runs):
            for name, measure in systems.items():
                seen[name].append(jobs / measure(server.url, Path(tmp), jobs))
    rates = {name: statistics.median(values) for name, values in seen.items()}
    best_peer = max(rate for name, rate in rates.items() if not name.startswith("ours"))
    print(
        f"redis-server {server.executable}, python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(f"{jobs:,} no-op jobs, concurrency {CONCURRENCY}, median of {runs} runs\n")
    print("| system | jobs/s | vs the faster peer |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / best_peer:.2f}x |")


def ours_seconds(url: str, work: Path, jobs: int) -> float:
    namespace = f"ours{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace}
    env |= {"PYTHONPATH": str(REPO), "ORCHESTRATOR_LOG_LEVEL": "warning"}
    env["ORCHESTRATOR_BACKLOGS"] = '["backlog:bench"]'
    command = [sys.executable, "-m", "orchestrator"]
    worker = [*command, "worker", "--pool", "metal", "--concurrency", str(CONCURRENCY)]
    path = manifest(work / f"{namespace}.jsonl", jobs)
    keys = Keys(namespace)

    async def submit_and_wait() -> float:
        async with open_client(url) as redis:
            while not (
                await redis.scard(keys.workers("metal")) and await redis.scard(keys.conductors)
            ):
                await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # past the conductor's start-up hold
            started = time.perf_counter()
            await dispatch_manifest(redis, keys, path, "backlog:bench", default_registry())
            while await redis.hlen(keys.receipts(namespace)) < jobs:
                await anyio.sleep(0.01)
            return time.perf_counter() - started

    return with_processes([worker, [*command, "conductor"]], env, submit_and_wait)


def arq_seconds(url: str, work: Path, jobs: int) -> float:
    queue = f"arq{uuid.uuid4().hex[:6]}"

    async def submit_and_wait() -> float:
        arq = open_arq(url)
        await anyio.sleep(1.5)  # the worker process is up and polling
        ids = [f"{queue}:{index}" for index in range(jobs)]
        started = time.perf_counter()

        async def submit(index: int) -> None:
            await arq.enqueue_job("system.echo", index, _job_id=ids[index], _queue_name=queue)

        await concurrently(submit, jobs)
        results = [f"arq:result:{job_id}" for job_id in ids]
        while await arq.exists(*results) < jobs:
            await anyio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await arq.aclose()
        return elapsed

    script = [sys.executable, __file__, "--arq-worker", url, queue]
    return with_processes([script], {**os.environ, "PYTHONPATH": str(REPO)}, submit_and_wait)


def saq_seconds(url: str, work: Path, jobs: int) -> float:
    from saq import Queue

    name = f"saq{uuid.uuid4().hex[:6]}"

    async def submit_and_wait() -> float:
        queue = Queue.from_url(url, name=name)
        await queue.connect()
        await anyio.sleep(1.5)  # the worker process is up and waiting
        started = time.perf_counter()

        async def submit(index: int) -> None:
            await queue.enqueue("echo", value=index)

        await concurrently(submit, jobs)
        while await queue.count("incomplete"):
            await anyio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await queue.disconnect()
        return elapsed

    script = [sys.executable, __file__, "--saq-worker", url, name]
    return with_processes([script], {**os.environ, "PYTHONPATH": str(REPO)}, submit_and_wait)


async def concurrently(submit: Callable[[int], Awaitable[None]], jobs: int) -> None:
    """Submit `jobs` jobs through SUBMITTERS concurrent callers, in order of index."""
    indexes = iter(range(jobs))

    async def submitter() -> None:
        for index in indexes:
            await submit(index)

    async with anyio.create_task_group() as group:
        for _ in range(SUBMITTERS):
            group.start_soon(submitter)


def with_processes(
    commands: list[list[str]], env: dict[str, str], measure: Callable[[], Awaitable[float]]
) -> float:
    processes = [subprocess.Popen(command, env=env) for command in commands]
    try:
        return float(anyio.run(measure))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def quietly(run: Callable[[], Awaitable[None]]) -> None:
    """Run a peer's worker until SIGTERM, then leave at once: the bench needs no drain,
    and a cancelled worker would print a traceback."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(run())


async def arq_worker(url: str, queue: str) -> None:
    async def echo(ctx: dict[str, Any], *args: Any) -> list[Any]:
        return list(args)

    arq = open_arq(url)
    worker = Worker(
        [func(echo, name="system.echo")],
        queue_name=queue,
        redis_pool=arq,
        max_jobs=CONCURRENCY,
        poll_delay=ARQ_POLL,
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        handle_signals=False,
    )
    await worker.async_run()


async def saq_worker(url: str, name: str) -> None:
    from saq import Queue
    from saq import Worker as SaqWorker

    async def echo(ctx: Any, *, value: Any) -> list[Any]:
        return [value]

    queue = Queue.from_url(url, name=name)
    worker = SaqWorker(queue, functions=[("echo", echo)], concurrency=CONCURRENCY)
    worker.SIGNALS = []  # SIGTERM is `quietly`'s
    await worker.start()


if __name__ == "__main__":
    main()
