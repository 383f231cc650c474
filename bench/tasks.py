"""Sync tasks: CPU-bound jobs on every core with the `process` executor (and what the
`thread` executor does with them), then this project against Celery 5 on the same jobs.

    python bench/tasks.py              # 3 runs of each case; 5, interleaved, against Celery
    python bench/tasks.py --runs 1 --celery-runs 1
    python bench/tasks.py --no-celery  # only the first table

Against Celery (needs the celery extra): the same task bodies, one private Redis (Celery
on other databases of it, as broker and result backend), timed from the first
submission to the last result, both submitted from this process: ours from the call
of `dispatch_manifest` (what `orchestrator dispatch` runs) to the last receipt, Celery's
from the first `.delay()` to the last `.get()`. CPU: 40 jobs of 0.1 s of
pure-Python work on 2 processes (our `process` executor; Celery's prefork pool). I/O:
200 blocking sleeps of 0.05 s at concurrency 20 (our `thread` executor; Celery's
threads pool), each with its defaults (`--without-heartbeat` and its kin slow Celery's
threads pool down 8x). Workers are started and ready before the clock starts.

Each case: a private Redis, a conductor and one metal worker of 2 slots (`--executor`),
then 8 jobs dispatched at once (from this process); timed from the dispatch to the last
receipt. `ideal` is
8 x the job's length / 2 slots: what two cores working without pause would take. The
CPU jobs are `cpu.spin` (0.6 s of pure-Python work, counted in its own thread's CPU time);
the I/O jobs `cpu.nap` (a blocking 0.5 s sleep).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.asyncio import Redis

from orchestrator.connection import connect
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.registry import task_registry
from orchestrator.stack.redis_server import RedisServer

JOBS, SLOTS = 8, 2
CASES = (
    ("cpu.spin", 0.6, "process"),
    ("cpu.spin", 0.6, "thread"),
    ("cpu.nap", 0.5, "process"),
    ("cpu.nap", 0.5, "thread"),
)
# label, task, seconds a job, jobs, concurrency, our executor, Celery's pool
CELERY_CASES = (
    ("CPU", "cpu.spin", 0.1, 40, 2, "process", "prefork"),
    ("I/O", "cpu.nap", 0.05, 200, 20, "thread", "threads"),
)
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    # Ours and Celery's within 1% of each other on the CPU case, where one run's figure
    # moves by about that much: a median of more runs says which is ahead.
    parser.add_argument("--celery-runs", type=int, default=5)
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery comparison")
    options = parser.parse_args()
    speed_up(options.runs)
    if not options.no_celery:
        against_celery(options.celery_runs)


def speed_up(runs: int) -> None:
    print("| task | executor | ideal (s) | median (s) | x ideal | runs, each a job once |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for number, (task, seconds, executor) in enumerate(CASES):
            times, once = [], True
            for run in range(runs):
                elapsed, attempts = one_run(
                    server.url, Path(tmp), f"t{number}r{run}", task, seconds, executor
                )
                times.append(elapsed)
                once = once and attempts == {1}
            ideal = JOBS * seconds / SLOTS
            median = statistics.median(times)
            print(
                f"| {task} {seconds:g} s | {executor} | {ideal:.2f} | {median:.2f} | "
                f"{median / ideal:.2f}x | {'yes' if once else 'NO'} |"
            )


def against_celery(runs: int) -> None:
    print("\n| jobs | concurrency | ours (s) | Celery (s) | ours vs Celery |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for label, task, seconds, count, slots, ours, theirs in CELERY_CASES:
            mine, celery = [], []
            for run in range(runs):
                namespace = f"c{label[0]}{run}"
                case = (task, seconds, ours, slots, count)
                mine.append(one_run(server.url, Path(tmp), namespace, *case)[0])
                celery.append(
                    celery_run(server.url, Path(tmp), task, seconds, theirs, slots, count)
                )
            a, b = statistics.median(mine), statistics.median(celery)
            print(
                f"| {count} x {label} {seconds:g} s | {slots} ({ours} / {theirs}) | {a:.2f} | "
                f"{b:.2f} | {b / a:.2f}x |"
            )


def celery_run(
    server: str, tmp: Path, task: str, seconds: float, pool: str, slots: int, count: int
) -> float:
    url = server.rsplit("/", 1)[0] + "/3"  # a database of the bench's own Redis
    os.environ["BENCH_CELERY_REDIS"] = url  # read once, when celery_app is imported
    from bench import celery_app

    assert celery_app.redis_url == url, "one private Redis per bench run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", pool,
         "--concurrency", str(slots), "--loglevel", "WARNING"],  # else Celery's defaults
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
    )  # fmt: skip
    app = celery_app.app
    try:
        while not app.control.ping(timeout=0.2):
            time.sleep(0.05)
        chosen = celery_app.spin if task == "cpu.spin" else celery_app.nap
        started = time.monotonic()
        results = [chosen.delay(seconds) for _ in range(count)]
        for result in results:
            result.get(timeout=300)
        elapsed = time.monotonic() - started
        for result in results:
            result.forget()
        results.clear()
        gc.collect()  # their finalizers talk to Redis: now, while it runs
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        redis.Redis.from_url(url).flushdb()  # a database of the bench's own private Redis
    return elapsed


def one_run(
    url: str,
    tmp: Path,
    namespace: str,
    task: str,
    seconds: float,
    executor: str,
    slots: int = SLOTS,
    jobs: int = JOBS,
) -> tuple[float, set[int]]:
    keys = Keys(namespace)
    env = {
        **os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace,
        "ORCHESTRATOR_LOG_FORMAT": "json", "ORCHESTRATOR_LOG_LEVEL": "warning",
        "ORCHESTRATOR_TASK_PACKAGES": '["bench.sync_tasks"]',
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
    worker = ["worker", "--pool", "metal", "--concurrency", str(slots), "--executor", executor]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )
        for args in (worker, ["conductor"])
    ]
    client = redis.Redis.from_url(url)
    events = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    # `orchestrator dispatch` in this process, as Celery's `.delay()` is in its: its
    # client connected and its registry read before the clock starts, as Celery's app is.
    loop, dispatcher = asyncio.new_event_loop(), _Dispatcher(url, keys)
    loop.run_until_complete(dispatcher.open())
    try:
        while not client.scard(keys.workers("metal")):
            time.sleep(0.05)
        manifest = tmp / f"{namespace}.jsonl"
        line = orjson.dumps({"task": task, "args": [seconds]}) + b"\n"
        manifest.write_bytes(line * jobs)
        events.subscribe(keys.events)  # a receipt's slot freed is said there
        started = time.monotonic()
        loop.run_until_complete(dispatcher.dispatch(manifest, namespace))
        # Woken by the workers' messages, as Celery's `.get()` is by its result backend's:
        # a poll loop here would take CPU from the jobs on a machine of two cores. A
        # receipt is written once a job has ended (a run that will retry writes a
        # `retrying` one): counted at each message, read once they are all there.
        receipts: list[dict[str, Any]] = []
        while len(receipts) < jobs or any(r["status"] != "succeeded" for r in receipts):
            events.get_message(timeout=0.5)
            if client.hlen(keys.receipts(namespace)) >= jobs:
                receipts = [orjson.loads(v) for v in client.hvals(keys.receipts(namespace))]
        elapsed = time.monotonic() - started
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)
        loop.run_until_complete(dispatcher.close())
        loop.close()
        events.close()
        client.close()
    return elapsed, {r["attempt"] for r in receipts}


class _Dispatcher:
    """`orchestrator dispatch`, called in this process as Celery's `.delay()` is in its:
    connected (`open`) before the clock starts, as Celery's app is by its first ping."""

    def __init__(self, url: str, keys: Keys) -> None:
        self.url, self.keys = url, keys
        self.registry = task_registry(("bench.sync_tasks",))
        self._opened = AsyncExitStack()
        self._client: Redis | None = None

    async def open(self) -> None:
        self._client = await self._opened.enter_async_context(connect(self.url))

    async def dispatch(self, manifest: Path, batch: str) -> None:
        assert self._client is not None, "opened first"
        await dispatch_manifest(
            self._client, self.keys, manifest, "backlog:default", self.registry, batch=batch
        )

    async def close(self) -> None:
        await self._opened.aclose()


if __name__ == "__main__":
    main()
