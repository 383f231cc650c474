"""Sync tasks on a worker of 2 slots: CPU-bound jobs on every core with the `process`
executor, and what the `thread` executor does with the same jobs.

    python bench/tasks.py              # 3 runs of each case
    python bench/tasks.py --runs 1

Each case: a private Redis, a conductor and one metal worker of 2 slots (`--executor`),
then 8 jobs dispatched at once; timed from the dispatch to the last receipt. `ideal` is
8 x the job's length / 2 slots: what two cores working without pause would take. The
CPU jobs are `cpu.spin` (0.6 s of pure-Python work, counted in its own thread's CPU time);
the I/O jobs `cpu.nap` (a blocking 0.5 s sleep).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis

from orchestrator.keys import Keys
from orchestrator.stack.redis_server import RedisServer

JOBS, SLOTS = 8, 2
CASES = (
    ("cpu.spin", 0.6, "process"),
    ("cpu.spin", 0.6, "thread"),
    ("cpu.nap", 0.5, "process"),
    ("cpu.nap", 0.5, "thread"),
)
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    print("| task | executor | ideal (s) | median (s) | x ideal | runs, each a job once |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for number, (task, seconds, executor) in enumerate(CASES):
            times, once = [], True
            for run in range(options.runs):
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


def one_run(
    url: str, tmp: Path, namespace: str, task: str, seconds: float, executor: str
) -> tuple[float, set[int]]:
    keys = Keys(namespace)
    env = {
        **os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace,
        "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5", "ORCHESTRATOR_LOG_FORMAT": "json",
        "ORCHESTRATOR_TASK_PACKAGES": '["bench.sync_tasks"]',
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
    worker = ["worker", "--pool", "metal", "--concurrency", str(SLOTS), "--executor", executor]
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
    try:
        while not client.scard(keys.workers("metal")):
            time.sleep(0.05)
        manifest = tmp / f"{namespace}.jsonl"
        line = orjson.dumps({"task": task, "args": [seconds]}) + b"\n"
        manifest.write_bytes(line * JOBS)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog",
             "backlog:default", "--batch", namespace], env=env, check=True, capture_output=True,
        )  # fmt: skip
        while client.hlen(keys.receipts(namespace)) < JOBS or not all(
            orjson.loads(v)["status"] == "succeeded" for v in client.hvals(keys.receipts(namespace))
        ):
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        receipts = [orjson.loads(v) for v in client.hvals(keys.receipts(namespace))]
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)
        client.close()
    return elapsed, {r["attempt"] for r in receipts}


if __name__ == "__main__":
    main()
