"""Routing throughput against the size of the fleet: 10, 1,000 and 10,000 workers.

    python bench/fleet.py            # the full run (about a minute)
    python bench/fleet.py --quick    # smaller batches

Starts a private Redis (as the tests do). For each fleet size it registers that many
simulated workers — no processes: their heartbeats written by the worker's own
`worker.heartbeat.beat`, keys and capacity counters exactly as a worker writes them —
then measures how fast one conductor moves a batch of jobs from a backlog into the
pool's arq queue (no worker runs them). Every fleet has the same total of slots, so
only the number of heartbeats differs. A round reads the pool's capacity counters, not
the heartbeats, so the rate should not depend on the fleet: the ratio to the 10-worker
rate is printed beside each.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

import anyio
from redis.asyncio import Redis

from bench.conductor import manifest, time_routing
from orchestrator.connection import open_client
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.metrics import Metrics
from orchestrator.registry import default_registry
from orchestrator.settings import load_settings
from orchestrator.stack.redis_server import RedisServer
from orchestrator.worker.heartbeat import beat
from orchestrator.worker.state import WorkerState

FLEETS = (10, 1_000, 10_000)
TOTAL_SLOTS = 10_000_000  # spread over the fleet: never the limit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    options = parser.parse_args()
    jobs, runs = (5_000, 3) if options.quick else (20_000, 5)
    configure_logging("warning")  # the table only: no `dispatched` line before it
    seen: dict[int, list[float]] = {fleet: [] for fleet in FLEETS}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for run in range(runs):  # interleaved, so that a busy spell of the machine is shared
            for fleet in FLEETS:
                seen[fleet].append(anyio.run(routing_rate, server.url, Path(tmp), fleet, jobs, run))
    rates = {fleet: statistics.median(values) for fleet, values in seen.items()}
    print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
    print(f"routing {jobs:,} jobs with one conductor, median of {runs} runs\n")
    print("| live workers | routing | vs 10 workers |\n|---|---|---|")
    for fleet, rate in rates.items():
        print(f"| {fleet:,} | {rate:,.0f} jobs/s | {rate / rates[FLEETS[0]]:.2f}x |")


async def register(redis: Redis, keys: Keys, fleet: int) -> None:
    """`fleet` heartbeats of pool metal, as many workers would each write theirs."""
    tasks = tuple(sorted(default_registry()))
    slots = TOTAL_SLOTS // fleet
    metrics = Metrics()  # one for all: 10,000 of them would weigh on the conductor's GC
    workers = [
        WorkerState("metal", f"sim-{n:05}", slots, tasks=tasks, ttl=600, metrics=metrics)
        for n in range(fleet)
    ]
    for start in range(0, fleet, 500):
        async with anyio.create_task_group() as group:
            for state in workers[start : start + 500]:
                group.start_soon(beat, redis, keys, state)
    del workers
    gc.collect()


async def routing_rate(url: str, work: Path, fleet: int, jobs: int, run: int) -> float:
    namespace = f"fleet{fleet}-{run}"
    settings = load_settings(redis_url=url, namespace=namespace, backlogs=["backlog:bench"])
    async with open_client(url) as redis:
        await register(redis, Keys(namespace), fleet)
        path = manifest(work / f"fleet-{fleet}-{run}.jsonl", jobs)
        rate = await time_routing(redis, settings, path, jobs)
        await redis.flushdb()  # the next fleet starts from an empty server
        return rate


if __name__ == "__main__":
    main()
