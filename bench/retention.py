"""Redis memory per job, and what pruning a big settled batch costs.

    python bench/retention.py                 # 10k jobs run for real; a 1M-receipt prune
    python bench/retention.py --receipts 100000 --jobs 2000    # quicker

Starts a private Redis (as the tests do), so it never touches a server of yours.

1. A real run: `--jobs` echo jobs dispatched (Redis `used_memory` before and after: the
   bytes a *queued* job costs), then run by a conductor and a worker of 4 slots (the
   bytes a *finished* job leaves: its receipt, plus arq's result key, which expires
   after an hour; both shown).
2. A settled batch of `--receipts` receipts (written as workers write them, one MULTI
   a chunk), then pruned by the retention pruner: the whole prune's time, the archive's
   size per job, and the longest single Redis command while it ran, from the server's
   own SLOWLOG (threshold 0: every command is logged with its execution time) —
   beside the time one `DEL` of the same hash would have blocked Redis.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import redis

from orchestrator.connection import open_client
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.receipts import Receipt, stage
from orchestrator.retention.archive import write_archive
from orchestrator.retention.pruner import Pruned, Pruner
from orchestrator.settings import load_settings
from orchestrator.stack.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
CHUNK = 2000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs of the real run")
    parser.add_argument("--receipts", type=int, default=1_000_000, help="receipts pruned")
    options = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        work = Path(tmp)
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        print(f"redis-server {version} ({server.executable}), python {sys.version.split()[0]}")
        print("| measure | figure |\n|---|---|")
        queued, finished, results, archived = real_run(server.url, client, work, options.jobs)
        print(f"| Redis memory per queued job ({options.jobs:,} queued) | {queued:,.0f} bytes |")
        print(f"| per finished job: receipt and batch records | {finished:,.0f} bytes |")
        print(f"| per finished job: arq's result key (expires after 1 h) | {results:,.0f} bytes |")
        print(f"| archive (gzip JSONL) per finished job | {archived:,.0f} bytes |")
        big = prune_run(server.url, client, work, options.receipts)
        for line in big:
            print(line)
        client.close()


def used(client: redis.Redis) -> int:
    client.memory_purge()  # jemalloc's dirty pages: a steadier figure
    return int(client.info("memory")["used_memory"])


def real_run(
    url: str, client: redis.Redis, work: Path, jobs: int
) -> tuple[float, float, float, float]:
    namespace = "benchrun"
    keys = Keys(namespace)
    env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace,
           "ORCHESTRATOR_LOG_LEVEL": "warning", "PYTHONPATH": str(REPO)}  # fmt: skip
    manifest = work / "daily_01.jsonl"
    with manifest.open("wb") as out:
        for index in range(jobs):
            out.write(orjson.dumps({"task": "system.echo", "args": [f"job {index}", index]}))
            out.write(b"\n")
    before = used(client)
    orchestrator = [sys.executable, "-m", "orchestrator"]
    subprocess.run([*orchestrator, "dispatch", str(manifest), "--backlog", "daily"],
                   env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    queued = used(client)
    processes = [
        subprocess.Popen([*orchestrator, *args], env=env, stdout=subprocess.DEVNULL)
        for args in (["worker", "--pool", "metal", "--concurrency", "4"], ["conductor"])
    ]
    try:
        while client.hlen(keys.receipts("daily_01")) < jobs:
            time.sleep(0.5)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    for key in client.scan_iter(f"{keys.root}:worker:*"):  # the worker's heartbeat
        client.delete(key)
    finished = used(client)
    for key in client.scan_iter("arq:result:*", count=1000):
        client.delete(key)
    settled = used(client)
    archived = anyio.run(archive_size, url, keys, "daily_01", work / "daily_01.jsonl.gz")
    return (
        (queued - before) / jobs, (settled - before) / jobs, (finished - settled) / jobs,
        archived / jobs,
    )  # fmt: skip


async def archive_size(url: str, keys: Keys, batch: str, target: Path) -> int:
    async with open_client(url) as client:
        return (await write_archive(client, keys, batch, target, [])).size


def prune_run(url: str, client: redis.Redis, work: Path, receipts: int) -> list[str]:
    namespace = "benchprune"
    keys = Keys(namespace)
    before = used(client)
    anyio.run(write_settled_batch, url, keys, "big_01", receipts)
    held = used(client) - before
    client.config_set("slowlog-log-slower-than", "0")
    client.config_set("slowlog-max-len", "200000")
    client.slowlog_reset()
    settings = load_settings(
        redis_url=url, namespace=namespace, data_dir=work / "data", batch_retention="1s"
    )
    settle_started = time.perf_counter()
    assert anyio.run(tick, settings) == []
    settle = time.perf_counter() - settle_started
    time.sleep(1.1)
    client.slowlog_reset()
    started = time.perf_counter()
    pruned = anyio.run(tick, settings)
    elapsed = time.perf_counter() - started
    longest = longest_command(client)
    client.config_set("slowlog-log-slower-than", "10000")
    assert len(pruned) == 1, pruned
    done = pruned[0]
    freed = before + held - used(client)
    # What a naive prune would cost: one DEL of the same hash, timed by the server.
    anyio.run(write_settled_batch, url, keys, "naive_01", receipts)
    client.config_set("slowlog-log-slower-than", "0")
    client.slowlog_reset()
    client.delete(keys.receipts("naive_01"))
    naive = longest_command(client)
    client.config_set("slowlog-log-slower-than", "10000")
    n = f"{receipts:,}"
    return [
        f"| Redis memory of a settled {n}-receipt batch | {held / 2**20:,.0f} MB "
        f"({held / receipts:,.0f} bytes a job) |",
        f"| finding it settled (one HSCAN pass) | {settle:.1f} s |",
        f"| pruning it: archive written, keys removed | {elapsed:.1f} s |",
        f"| longest single Redis command while pruning | {longest[1] / 1000:.1f} ms "
        f"(`{longest[0]}`) |",
        f"| one `DEL` of the same hash instead | {naive[1] / 1000:.0f} ms |",
        f"| memory freed (MEMORY USAGE before: {done.bytes / 2**20:,.0f} MB) "
        f"| {freed / 2**20:,.0f} MB |",
        f"| archive size | {done.archive_bytes / 2**20:,.1f} MB "
        f"({done.archive_bytes / receipts:,.0f} bytes a job) |",
    ]


async def tick(settings: Any) -> list[Pruned]:
    async with open_client(settings.redis_url) as client:
        return await Pruner(settings, client, "bench").tick()


async def write_settled_batch(url: str, keys: Keys, batch: str, jobs: int) -> None:
    """A dispatched batch whose every job succeeded, its receipts as a worker writes them."""
    now = time.time()
    async with open_client(url) as client:
        await client.hset(keys.batch(batch), mapping={
            "sha256": "0" * 64, "manifest": f"/data/manifests/{batch}.jsonl",
            "backlog": "backlog:daily", "total": jobs, "queued": jobs, "created_at": now,
            "dispatched_at": now, "complete": 1,
        })  # fmt: skip
        await client.zadd(keys.batches, {batch: now})
        for start in range(0, jobs, CHUNK):
            async with client.pipeline(transaction=True) as pipe:
                for index in range(start, min(start + CHUNK, jobs)):
                    # times and workers vary as a real run's do (gzip would flatter
                    # identical receipts)
                    began, took = now + index * 0.00053, 0.001 + (index * 7919 % 997) / 1e6
                    receipt: Receipt = {
                        "job_id": f"{batch}:{index + 1}", "batch": batch, "task": "system.echo",
                        "status": "succeeded", "pool": "metal",
                        "worker": f"host-{1234 + index % 4}-0a1b2c", "attempt": 1,
                        "started_at": began, "ended_at": began + took, "duration": took,
                        "error": None, "result": [f"job {index}", index],
                    }  # fmt: skip
                    stage(pipe, keys, receipt, finished=True)
                await pipe.execute()


def longest_command(client: redis.Redis) -> tuple[str, int]:
    """The slowest command the server logged (name, µs)."""
    entries = client.slowlog_get(200_000)
    slowest = max(entries, key=lambda entry: entry["duration"])
    command = slowest["command"]
    name = command.decode() if isinstance(command, bytes) else str(command)
    return " ".join(name.split()[:2])[:40], int(slowest["duration"])


if __name__ == "__main__":
    main()
