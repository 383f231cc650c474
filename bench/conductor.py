"""Conductor throughput, end-to-end cost against raw arq, and idle CPU — in one run.

    python bench/conductor.py            # the full run (about a minute)
    python bench/conductor.py --quick    # smaller batches

Starts a private Redis (as the tests do). Three measures:

1. Routing: jobs/s from a backlog into a pool's arq queue (no workers run; a fake
   heartbeat announces plenty of slots), against a naive loop of per-job `BLMOVE`,
   arq `enqueue_job` and `LREM` on the same server.
2. End to end: no-op jobs from submission to the last one done, through dispatch →
   conductor → one metal worker process, against raw arq (an `enqueue_job` loop and
   one arq worker process) with the same worker settings (max_jobs, poll delay, JSON).
3. Idle: CPU of an `orchestrator conductor` process with empty backlogs, over 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from arq.worker import Worker, func
from redis.asyncio import Redis

from orchestrator.conductor.rounds import Conductor
from orchestrator.connection import open_arq, open_client
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.registry import default_registry
from orchestrator.settings import Settings, load_settings
from orchestrator.stack.redis_server import RedisServer
from orchestrator.worker.arq_hooks import POLL_DELAY
from orchestrator.worker.heartbeat import beat
from orchestrator.worker.state import WorkerState

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument(
        "--raw-worker", nargs=3, metavar=("URL", "QUEUE", "POLL"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    if options.raw_worker:
        anyio.run(raw_worker, *options.raw_worker)
        return
    configure_logging("warning")  # no `dispatched` lines from this process's dispatches
    routed_jobs, naive_jobs, e2e_jobs = (
        (5_000, 1_000, 500) if options.quick else (20_000, 3_000, 2_000)
    )
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        work = Path(tmp)
        ours = anyio.run(routing_rate, server.url, work, routed_jobs)
        naive = anyio.run(naive_rate, server.url, work, naive_jobs)
        raw_default = raw_arq_seconds(server.url, e2e_jobs, POLL_DELAY, "default")
        raw_tuned = raw_arq_seconds(server.url, e2e_jobs, 0.05, "tuned")
        our_seconds = pipeline_seconds(server.url, work, e2e_jobs)
        idle = idle_cpu_percent(server.url, work)
    print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
    print("| measure | value |\n|---|---|")
    print(f"| conductor routing, {routed_jobs:,} jobs | {ours:,.0f} jobs/s |")
    print(f"| naive BLMOVE + enqueue_job + LREM loop, {naive_jobs:,} jobs | {naive:,.0f} jobs/s |")
    print(f"| routing ratio | {ours / naive:.1f}x |")
    for label, seconds in (
        (f"raw arq, poll_delay {POLL_DELAY} s (ours when no wake-up comes)", raw_default),
        ("raw arq, poll_delay 0.05 s (tuned for this test)", raw_tuned),
        ("dispatch → conductor → our worker", our_seconds),
    ):
        print(f"| end to end, {e2e_jobs:,} no-op jobs, {label} | {seconds:.2f} s "
              f"({e2e_jobs / seconds:,.0f} jobs/s) |")  # fmt: skip
    print(f"| end-to-end ratio vs raw arq, same poll_delay | {raw_default / our_seconds:.2f}x |")
    print(f"| end-to-end ratio vs raw arq, tuned poll_delay | {raw_tuned / our_seconds:.2f}x |")
    print(f"| conductor idle CPU, 10 s | {idle:.2f} % |")


def manifest(path: Path, jobs: int, task: str = "system.echo") -> Path:
    with path.open("wb") as file:
        for index in range(jobs):
            file.write(orjson.dumps({"task": task, "args": [index]}) + b"\n")
    return path


async def routing_rate(url: str, work: Path, jobs: int) -> float:
    namespace = "route"
    settings = load_settings(redis_url=url, namespace=namespace, backlogs=["backlog:bench"])
    keys = Keys(namespace)
    async with open_client(url) as redis:
        # Plenty of slots, announced by the worker's own heartbeat, with no worker to run
        # anything.
        tasks = tuple(sorted(default_registry()))
        await beat(redis, keys, WorkerState("metal", "bench", 10_000_000, tasks=tasks, ttl=600))
        return await time_routing(redis, settings, manifest(work / "route.jsonl", jobs), jobs)


async def time_routing(redis: Redis, settings: Settings, path: Path, jobs: int) -> float:
    """Dispatch `path` onto `backlog:bench`, then time one conductor moving all of its
    `jobs` into metal's arq queue (no worker runs them): jobs a second."""
    keys = Keys(settings.namespace)
    await dispatch_manifest(redis, keys, path, "backlog:bench", default_registry())
    with open(os.devnull, "w") as devnull:  # the conductor logs each decision, as in use
        configure_logging("info", "json", devnull)
        conductor = Conductor(settings, redis)
        stop = anyio.Event()
        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: conductor.run(stop=stop))
            while await redis.zcard(keys.pool_queue("metal")) < jobs:
                await anyio.sleep(0.005)
            elapsed = time.perf_counter() - started
            stop.set()
        configure_logging("warning")
    return jobs / elapsed


async def naive_rate(url: str, work: Path, jobs: int) -> float:
    keys = Keys("naive")
    async with open_client(url) as redis:
        path = manifest(work / "naive.jsonl", jobs)
        await dispatch_manifest(redis, keys, path, "backlog:bench", default_registry())
        arq = open_arq(url)
        backlog, processing = keys.backlog("backlog:bench"), keys.processing("naive")
        started = time.perf_counter()
        for _ in range(jobs):
            raw = await redis.blmove(backlog, processing, 1, "LEFT", "RIGHT")
            job = orjson.loads(raw)
            await arq.enqueue_job(
                job["task"],
                job,
                _job_id=keys.arq_job_id(job["id"]),
                _queue_name=keys.pool_queue("metal"),
            )
            await redis.lrem(processing, 1, raw)
        elapsed = time.perf_counter() - started
        await arq.aclose()
        return jobs / elapsed


def raw_arq_seconds(url: str, jobs: int, poll_delay: float, run: str) -> float:
    queue = f"raw:{run}:queue"
    worker = subprocess.Popen(
        [sys.executable, __file__, "--raw-worker", url, queue, str(poll_delay)]
    )
    try:

        async def submit_and_wait() -> float:
            arq = open_arq(url)
            await anyio.sleep(1.5)  # the worker process is up and polling
            ids = [f"raw:{run}:{index}" for index in range(jobs)]
            started = time.perf_counter()
            for index, job_id in enumerate(ids):
                await arq.enqueue_job("system.echo", index, _job_id=job_id, _queue_name=queue)
            results = [f"arq:result:{job_id}" for job_id in ids]
            while await arq.exists(*results) < jobs:
                await anyio.sleep(0.01)
            elapsed = time.perf_counter() - started
            await arq.aclose()
            return elapsed

        return float(anyio.run(submit_and_wait))
    finally:
        worker.terminate()
        worker.wait()


async def raw_worker(url: str, queue: str, poll_delay: str) -> None:
    async def echo(ctx: dict[str, Any], *args: Any) -> list[Any]:
        return list(args)

    arq = open_arq(url)
    worker = Worker(
        [func(echo, name="system.echo")],
        queue_name=queue,
        redis_pool=arq,
        max_jobs=CONCURRENCY,
        poll_delay=float(poll_delay),
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
    )
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        # How this worker stops: on SIGTERM arq's own handler cancels its main task,
        # which `async_run` awaits (arq's sync `run` swallows it the same way).
        pass
    finally:
        await worker.close()


def pipeline_seconds(url: str, work: Path, jobs: int) -> float:
    env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": "e2e", "PYTHONPATH": str(REPO)}
    env["ORCHESTRATOR_BACKLOGS"] = '["backlog:bench"]'
    env["ORCHESTRATOR_LOG_LEVEL"] = "warning"
    command = [sys.executable, "-m", "orchestrator"]
    processes = [
        subprocess.Popen(
            [*command, "worker", "--pool", "metal", "--concurrency", str(CONCURRENCY)], env=env
        ),
        subprocess.Popen([*command, "conductor"], env=env),
    ]
    path = manifest(work / "e2e.jsonl", jobs)
    keys = Keys("e2e")
    try:

        async def submit_and_wait() -> float:
            async with open_client(url) as redis:
                await anyio.sleep(1.5)  # both processes are up
                started = time.perf_counter()
                await dispatch_manifest(redis, keys, path, "backlog:bench", default_registry())
                while await redis.hlen(keys.receipts("e2e")) < jobs:
                    await anyio.sleep(0.01)
                return time.perf_counter() - started

        return float(anyio.run(submit_and_wait))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def idle_cpu_percent(url: str, work: Path) -> float:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "ORCHESTRATOR_NAMESPACE": "idle",
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "conductor"], env=env,
                               stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(3)  # past start-up
        before, started = _cpu_ticks(process.pid), time.monotonic()
        time.sleep(10)
        used = (_cpu_ticks(process.pid) - before) / os.sysconf("SC_CLK_TCK")
        return 100 * used / (time.monotonic() - started)
    finally:
        process.terminate()
        process.wait()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


if __name__ == "__main__":
    main()
