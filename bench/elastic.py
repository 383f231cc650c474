"""Elastic cloud with the `local` provider: how fast cloud capacity comes when metal is
full, and how much idle cloud time a batch pays for.

    python bench/elastic.py              # 3 runs of 10 sleepers of 2 s on metal 2 slots
    python bench/elastic.py --runs 1

Starts a private Redis, a conductor whose cloud pool has a local scaler (scale_up_after
1 s, 2 slots a worker, at most 3, released after 1 s idle) and one metal worker of 2
slots, dispatches the batch, and reads the receipts and the scaler's launch records.
Reports per run: seconds from spill demand (the first metal job routed while more wait)
to the first cloud job starting, against the goal `scale_up_after + boot + 1 s`; the
boot time of the launches; the worker-seconds paid for, used and idle.
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
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from orchestrator.keys import Keys
from orchestrator.stack.redis_server import RedisServer

SCALE_UP_AFTER, SLOTS, JOBS, SECONDS = 1.0, 2, 10, 2.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for run in range(options.runs):
            rows.append(one_run(server.url, Path(tmp), f"el{run}"))
    print("| run | spill → first cloud job (s) | boot (s) | goal (s) | paid | used | idle |")
    print("|---|---|---|---|---|---|---|")
    for n, row in enumerate(rows, 1):
        print(
            f"| {n} | {row['reaction']:.2f} | {row['boot']:.2f} | {row['goal']:.2f} | "
            f"{row['paid']:.1f} | {row['used']:.1f} | {row['idle']:.1f} |"
        )
    print(
        f"median reaction {statistics.median(r['reaction'] for r in rows):.2f} s; "
        f"median idle {statistics.median(r['idle'] for r in rows):.1f} worker-seconds a batch"
    )


def one_run(url: str, tmp: Path, namespace: str) -> dict[str, float]:
    keys = Keys(namespace)
    scaler = {
        "provider": "local", "scale_up_after": SCALE_UP_AFTER, "slots_per_worker": SLOTS,
        "max_workers": 3, "idle_release_after": 1, "launch_rate": 60, "boot_timeout": 30,
    }  # fmt: skip
    pools = [{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "scaler": scaler}]
    env = {
        **os.environ, "REDIS_URL": url, "ORCHESTRATOR_NAMESPACE": namespace,
        "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5", "ORCHESTRATOR_LOG_FORMAT": "json",
        "ORCHESTRATOR_POOLS": orjson.dumps(pools).decode(),
    }  # fmt: skip
    log = (tmp / f"{namespace}-conductor.log").open("wb")
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        for args, out in (
            (["worker", "--pool", "metal", "--concurrency", "2"], subprocess.DEVNULL),
            (["conductor"], log),
        )
    ]
    client = redis.Redis.from_url(url)
    try:
        while not client.scard(keys.workers("metal")):
            time.sleep(0.05)
        manifest = tmp / f"{namespace}.jsonl"
        manifest.write_bytes(
            b"".join(
                orjson.dumps({"task": "system.sleep", "args": [SECONDS]}) + b"\n"
                for _ in range(JOBS)
            )
        )
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog",
             "backlog:default"], env=env, check=True, capture_output=True,
        )  # fmt: skip
        while client.hlen(keys.receipts(namespace)) < JOBS:
            time.sleep(0.1)
        while any(
            orjson.loads(v)["state"] in ("launching", "active", "draining")
            for v in client.hvals(keys.launches("cloud"))
        ):
            time.sleep(0.1)
        receipts = [orjson.loads(v) for v in client.hvals(keys.receipts(namespace))]
        launches = [orjson.loads(v) for v in client.hvals(keys.launches("cloud"))]
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)
        log.close()
        client.close()
    events = [orjson.loads(line) for line in (tmp / f"{namespace}-conductor.log").read_bytes()
              .splitlines() if line.startswith(b"{")]  # fmt: skip
    routed = [e for e in events if e.get("event") == "routed" and e.get("pool") == "metal"]
    spill = min(_at(e) for e in routed)
    first_cloud = min(r["started_at"] for r in receipts if r["pool"] == "cloud")
    boots = [r["booted_at"] - r["launched_at"] for r in launches if r["booted_at"]]
    paid = sum(r["ended_at"] - r["launched_at"] for r in launches)
    used = sum(r["duration"] for r in receipts if r["pool"] == "cloud") / SLOTS
    return {
        "reaction": first_cloud - spill, "boot": max(boots),
        "goal": SCALE_UP_AFTER + max(boots) + 1, "paid": paid, "used": used, "idle": paid - used,
    }  # fmt: skip


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


if __name__ == "__main__":
    main()
