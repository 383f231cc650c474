"""What the dashboard costs: Redis reads per refresh with many pages open, and how long
each page's data takes the server, on a big service.

    python bench/web.py              # 100 workers, 1,000 batches, 10 open pages, 20 s
    python bench/web.py --seconds 5

Starts a private Redis and fills it as a busy service would: 100 worker heartbeats
(written by the worker's own `beat`), 1,000 dispatched batches of 50 jobs with their
receipts (a few failed, with dead letters), one of them of 10,000 jobs. Then serves
the dashboard (uvicorn, as `orchestrator web` does) with its refresh interval (0.5 s)
and opens 10 live pages (server-sent-event streams) for the run. Meanwhile a client
fetches what each page reads, each time after the last read expired, and times it.
Reports:

- first half of the run, the 10 pages only (each also reloading the overview and the
  first page of batches ten times a second): snapshot scripts Redis ran (its own
  command statistics) per refresh interval; the goal is at most 1;
- second half, the same and a client fetching what each page reads, each time after
  the last read expired: per page, the server's time (its `Server-Timing` header) and
  the round trip, p50/p95/max (goal: p95 ≤ 100 ms). A settled batch is served from its
  last read while nothing changed it (one small round trip checks), so the whole read
  of the 10,000-job batch, what its first view costs, is timed apart at the end.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import uvicorn
from redis.asyncio import Redis

from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.metrics import Metrics
from orchestrator.registry import default_registry
from orchestrator.settings import Settings, load_settings
from orchestrator.stack.redis_server import RedisServer
from orchestrator.status.batch_detail import read_batch
from orchestrator.web.app import REFRESH as INTERVAL
from orchestrator.web.app import Dashboard
from orchestrator.worker.heartbeat import beat
from orchestrator.worker.state import WorkerState

WORKERS, BATCHES, JOBS, PAGES = 100, 1_000, 50, 10
BIG = 10_000  # jobs of one more batch, the biggest page


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the run")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        result = anyio.run(run, server.url, Path(tmp), options.seconds)
    print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
    print(
        f"{WORKERS} workers, {BATCHES:,} batches of {JOBS} jobs, {PAGES} live pages, "
        f"refresh every {INTERVAL:g} s, {options.seconds:g} s\n"
    )
    print(
        f"snapshot scripts run by Redis: {result['scripts']} in {result['intervals']:.1f} "
        f"intervals = {result['scripts'] / result['intervals']:.2f} per interval "
        f"(goal ≤ 1); live pages got {result['events']} refreshes\n"
    )
    print(
        "server time (Server-Timing), and round trip as the client saw it (in the same "
        "process as the 10 pages, so it includes their load)\n"
    )
    print("| page (what it reads) | server p50 | p95 | max | round trip p95 | samples |")
    print("|---|---|---|---|---|---|")
    for name, times in result["timings"].items():
        ms = sorted(t * 1000 for t in times)
        trip = sorted(t * 1000 for t in result["round_trips"][name])
        print(
            f"| {name} | {statistics.median(ms):.1f} ms | {_p95(ms):.1f} ms | {ms[-1]:.1f} ms "
            f"| {_p95(trip):.1f} ms | {len(ms)} |"
        )


def _p95(ordered: list[float]) -> float:
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def run(url: str, tmp: Path, seconds: float) -> dict[str, Any]:
    settings = load_settings(redis_url=url, namespace="webbench")
    keys = Keys(settings.namespace)
    redis = Redis.from_url(url)
    try:
        await fill(redis, keys, settings, tmp)
        return await measure(redis, settings, seconds)
    finally:
        await redis.aclose()


async def fill(redis: Redis, keys: Keys, settings: Settings, tmp: Path) -> None:
    tasks = tuple(sorted(default_registry()))
    metrics = Metrics()
    for n in range(WORKERS):
        pool = "metal" if n % 2 == 0 else "cloud"
        state = WorkerState(pool, f"sim-{n:03}", 4, tasks=tasks, ttl=3600, metrics=metrics)
        await beat(redis, keys, state)
    lines = b"".join(
        orjson.dumps({"task": "system.echo", "args": [n]}) + b"\n" for n in range(JOBS)
    )
    registry = default_registry()
    big = b"".join(orjson.dumps({"task": "system.echo", "args": [n]}) + b"\n" for n in range(BIG))
    for b in range(BATCHES):
        name, body = ("big", big) if b == BATCHES // 3 else (f"batch{b:04}", lines)
        manifest = tmp / f"{name}.jsonl"
        manifest.write_bytes(body)
        await dispatch_manifest(redis, keys, manifest, "backlog:default", registry)
        await receipts(redis, keys, name, body.count(b"\n"), failed=b % 50 == 0)
        manifest.unlink()
    await redis.delete(keys.backlog("backlog:default"))  # as if the conductor took them


async def receipts(redis: Redis, keys: Keys, batch: str, jobs: int, *, failed: bool) -> None:
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1, jobs + 1):
            job_id = f"{batch}:{n}"
            status = "failed" if failed and n % 100 == 1 else "succeeded"
            receipt = {
                "job_id": job_id, "batch": batch, "task": "system.echo", "status": status,
                "pool": "metal" if n % 3 else "cloud", "worker": f"sim-{n % WORKERS:03}",
                "attempt": 1, "started_at": now - 2, "ended_at": now, "duration": 2.0,
                "error": "ValueError: boom" if status == "failed" else None,
            }  # fmt: skip
            pipe.hset(keys.receipts(batch), job_id, orjson.dumps(receipt))
            if status == "failed":
                envelope = {"id": job_id, "batch": batch, "task": "system.echo", "args": [n]}
                letter = {"job_id": job_id, "reason": "failed", "error": "ValueError: boom",
                          "at": now, "payload": envelope, "receipt": receipt}  # fmt: skip
                pipe.rpush(keys.dead, orjson.dumps(letter))
        await pipe.execute()


async def measure(redis: Redis, settings: Settings, seconds: float) -> dict[str, Any]:
    dashboard = Dashboard(redis, settings, token="bench", interval=INTERVAL)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        dashboard.app(loopback_only=True), log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    pages = {
        "overview (/api/status)": "/api/status",
        "batches, page 1": "/api/batches",
        "batches, page 40": "/api/batches?page=40",
        "a batch of 50 jobs": "/api/batches/batch0500",
        f"a batch of {BIG:,} jobs": "/api/batches/big",
        f"a batch of {BIG:,} jobs, failed only": "/api/batches/big?state=failed",
        "dead letters": "/api/dead",
    }
    timings: dict[str, list[float]] = {name: [] for name in pages}  # server time, s
    round_trips: dict[str, list[float]] = {name: [] for name in pages}
    events = 0

    async def live_page(client: httpx.AsyncClient) -> None:
        """A page left open: its event stream, and its own reloads of the overview and
        the first page of batches, as fast as a user could click."""
        nonlocal events

        async def reloads() -> None:
            while True:
                for path in ("/api/status", "/api/batches"):
                    (await client.get(base + path)).raise_for_status()
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as page:
            page.start_soon(reloads)
            async with client.stream("GET", base + "/api/events") as stream:
                async for line in stream.aiter_lines():
                    events += line.startswith("event: status")

    async def reader(client: httpx.AsyncClient) -> None:
        while True:
            for name, path in pages.items():
                started = time.perf_counter()
                reply = await client.get(base + path)
                reply.raise_for_status()
                round_trips[name].append(time.perf_counter() - started)
                server_ms = float(reply.headers["server-timing"].split("dur=")[1])
                timings[name].append(server_ms / 1000)
            await anyio.sleep(INTERVAL * 1.05)  # every read a fresh one

    async with anyio.create_task_group() as serving:
        serving.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        # Idle connections dropped by the client before the server's keep-alive timeout
        # (uvicorn's 5 s) can close them under a request just sent on one.
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await client.get(base + "/api/status")  # the script loaded, a first read
            # 1. only the shared views open: count Redis's snapshot scripts
            before, started = await scripts(redis), time.monotonic()
            with anyio.move_on_after(seconds / 2):
                async with anyio.create_task_group() as load:
                    for _ in range(PAGES):
                        load.start_soon(live_page, client)
            elapsed = time.monotonic() - started
            ran = await scripts(redis) - before
            # 2. the same pages open, and every page's data timed, each a fresh read
            with anyio.move_on_after(seconds / 2):
                async with anyio.create_task_group() as load:
                    for _ in range(PAGES):
                        load.start_soon(live_page, client)
                    load.start_soon(reader, client)
        server.should_exit = True
    # a settled batch is served from its last read while its fingerprint holds: the
    # whole read, as the first view of a big batch (or one that changed) costs it
    whole = f"a batch of {BIG:,} jobs, read whole"
    timings[whole], round_trips[whole] = [], []
    for _ in range(10):
        started = time.perf_counter()
        detail = await read_batch(redis, Keys(settings.namespace), "big")
        assert detail is not None
        detail.to_json()
        timings[whole].append(time.perf_counter() - started)
        round_trips[whole].append(timings[whole][-1])
    return {
        "scripts": ran,
        "intervals": elapsed / INTERVAL,
        "timings": timings,
        "round_trips": round_trips,
        "events": events,
    }


async def scripts(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name.startswith("cmdstat_eval"))


if __name__ == "__main__":
    main()
