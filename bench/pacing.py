"""Rate-limit pacing, wake-up latency and idle CPU of the conductor, on real processes.

    python bench/pacing.py            # the full table (about four minutes)
    python bench/pacing.py --quick    # fewer jobs per row, 20 latency samples

Starts a private Redis (as the tests do), and for each row a metal worker of 50 slots
and one or three `orchestrator conductor` processes sharing one bucket on
`system.echo`. It dispatches the batch at once and reads from the conductors' logs the
instant of every forward (the `at` of `routed`: Redis's clock, the clock the bucket is
kept on) and every `rate_limited` deferral. Per row:

- achieved: (jobs - burst) / (last forward - first forward), against the rate;
- time: that span against the ideal (jobs - burst) / rate;
- max window excess: the most that the forwards in any window of t seconds exceed
  burst + rate·t (0: never exceeded; 1: one job more than the bucket allows);
- deferrals: `rate_limited` log lines per job.

A forward's instant is when its job is due in the pool's queue: a conductor forwards a
rate-limited job up to 10 ms ahead of it (lua/forward.lua), so its own lateness moves
no instant. Then, burst 1 and one conductor with a live worker: when the jobs start
against their instants (receipts' `started_at` less the `at` of `routed`; never below 0
if no job starts early) and the starts' span against the ideal.

Then, with three backlogs configured: the latency from the start of a dispatch (or a
`dlq requeue`) to the forward, for a job on the third backlog, on a backlog created
after the conductor started, and for a requeued dead letter; and, with the default
settings, the conductor's CPU over 10 s with nothing to do.

With burst 1 a bucket has no room for lateness: a forward late by x would delay every
one after it by x, so that the time against the ideal were about 1 + rate·(the mean
lateness); forwarded ahead and due at their instants, the jobs keep the bucket's.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import redis

from orchestrator.connection import open_client
from orchestrator.control import deadletters
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.receipts import DeadLetter
from orchestrator.registry import default_registry
from orchestrator.stack.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
RATES = (20, 100, 500)
BURSTS = (1, 10)
CONDUCTORS = (1, 3)
SECONDS = {20: 15.0, 100: 10.0, 500: 6.0}  # of pacing per row: 300, 1,000, 3,000 jobs


@dataclass(frozen=True)
class Pacing:
    rate: float
    burst: int
    conductors: int
    jobs: int
    span: float  # seconds from the first forward to the last
    excess: float  # most jobs beyond burst + rate·t in any window
    deferrals: int

    @property
    def ideal(self) -> float:
        return (self.jobs - self.burst) / self.rate

    @property
    def achieved(self) -> float:
        return (self.jobs - self.burst) / self.span


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs per row")
    options = parser.parse_args()
    configure_logging("warning")  # this process dispatches: no `dispatched` lines here
    scale = 0.4 if options.quick else 1.0
    samples = 20 if options.quick else 50
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        work = Path(tmp)
        rows = [
            pacing(server.url, work, rate, burst, conductors, round(rate * SECONDS[rate] * scale))
            for rate in RATES
            for burst in BURSTS
            for conductors in CONDUCTORS
        ]
        began = [
            starts(server.url, work, rate, round(rate * SECONDS[rate] * scale / 2))
            for rate in RATES
        ]
        waits, idle = wake_ups(server.url, work, samples)
    print(f"redis-server {server.executable}, python {sys.version.split()[0]}")
    print("| rate | burst | conductors | jobs | achieved | time vs ideal "
          "| max window excess | deferrals per job |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.rate:g}/s | {row.burst} | {row.conductors} | {row.jobs:,} "
            f"| {row.achieved:,.1f}/s | {row.span / row.ideal:.3f}x "
            f"| {row.excess:.2f} | {row.deferrals / row.jobs:.3f} |"
        )
    print("\n| rate, burst 1, live worker | jobs | starts vs ideal | earliest vs instant "
          "| lateness p50 | p95 | max |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for started in began:
        late = started.lateness
        print(
            f"| {started.rate:g}/s | {started.jobs:,} | {started.span / started.ideal:.3f}x "
            f"| {late[0] * 1000:+.2f} ms | {_percentile(late, 50) * 1000:.1f} ms "
            f"| {_percentile(late, 95) * 1000:.1f} ms | {late[-1] * 1000:.1f} ms |"
        )
    print("\n| wake-up | p50 | p95 | max |\n|---|---|---|---|")
    for label, values in waits.items():
        p50, p95 = _percentile(values, 50), _percentile(values, 95)
        print(
            f"| {label} | {p50 * 1000:.1f} ms | {p95 * 1000:.1f} ms | {max(values) * 1000:.1f} ms |"
        )
    print(f"\nconductor idle CPU over 10 s, three backlogs, default settings: {idle:.2f} %")


# --- one stack of processes ----------------------------------------------------------


class Stack:
    """A worker and conductors of the `orchestrator` command, logs in files."""

    def __init__(
        self, url: str, work: Path, namespace: str, heartbeat: float = 0.5, **settings: Any
    ) -> None:
        self.keys = Keys(namespace)
        self.work = work
        self.redis = redis.Redis.from_url(url)
        self.env = {
            **os.environ,
            "REDIS_URL": url,
            "ORCHESTRATOR_NAMESPACE": namespace,
            "ORCHESTRATOR_HEARTBEAT_INTERVAL": str(heartbeat),
            "ORCHESTRATOR_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        for name, value in settings.items():
            self.env[f"ORCHESTRATOR_{name.upper()}"] = orjson.dumps(value).decode()
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.work / f"{self.keys.namespace}-{args[0]}-{len(self.processes)}.log"
        with log.open("wb") as out:  # the child writes to its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", *args],
                env=self.env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append((process, log))
        return process, log

    def worker(self, slots: int, *, frozen: bool = False) -> None:
        """A metal worker; `frozen`: stopped (SIGSTOP) once it has announced its slots,
        with a heartbeat that lasts the run, so that the pool takes what is forwarded
        and runs nothing — the conductor is measured, not a worker on the same cores."""
        env = self.env
        if frozen:
            self.env = {**env, "ORCHESTRATOR_HEARTBEAT_INTERVAL": "100"}
        process, _ = self.start("worker", "--pool", "metal", "--concurrency", str(slots))
        self.env = env
        self.until(lambda: bool(self.redis.smembers(self.keys.workers("metal"))))
        if frozen:
            process.send_signal(signal.SIGSTOP)

    def conductors(self, count: int) -> list[Path]:
        logs = [self.start("conductor")[1] for _ in range(count)]
        self.until(lambda: self.redis.scard(self.keys.conductors) >= count)
        # past the conductors' start-up hold (one heartbeat interval)
        time.sleep(float(self.env["ORCHESTRATOR_HEARTBEAT_INTERVAL"]) + 0.5)
        return logs

    @staticmethod
    def until(condition: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the stack did not get there in time")
            time.sleep(0.01)

    def stop(self) -> None:
        for process, _ in self.processes:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
        for process, _ in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.close()


@contextmanager
def stack(
    url: str, work: Path, namespace: str, heartbeat: float = 0.5, **settings: Any
) -> Iterator[Stack]:
    built = Stack(url, work, namespace, heartbeat, **settings)
    try:
        yield built
    finally:
        built.stop()


def events(logs: list[Path], event: str) -> list[dict[str, Any]]:
    found = []
    for log in logs:
        for line in log.read_bytes().splitlines():
            if line.startswith(b"{") and b'"' + event.encode() + b'"' in line:
                parsed = orjson.loads(line)
                if parsed.get("event") == event:
                    found.append(parsed)
    return found


# --- pacing --------------------------------------------------------------------------


def pacing(url: str, work: Path, rate: float, burst: int, conductors: int, jobs: int) -> Pacing:
    namespace = f"pace{rate:g}b{burst}c{conductors}"
    limits = {"task:system.echo": {"rate": rate, "burst": burst}}
    with stack(url, work, namespace, rate_limits=limits) as run:
        # Slots to hold the whole batch: the pool's capacity is not what is measured.
        run.worker(jobs, frozen=True)
        logs = run.conductors(conductors)
        path = work / f"{namespace}.jsonl"
        path.write_bytes(b"".join(b'{"task":"system.echo","args":[%d]}\n' % n for n in range(jobs)))
        anyio.run(_dispatch, url, run.keys, path, "backlog:default")
        run.until(lambda: sum(log.read_bytes().count(b'"routed"') for log in logs) >= jobs, 120)
    forwards = sorted(float(e["at"]) for e in events(logs, "routed"))
    assert len(forwards) == jobs, (len(forwards), jobs)
    return Pacing(
        rate, burst, conductors, jobs, forwards[-1] - forwards[0],
        window_excess(forwards, rate, burst), len(events(logs, "rate_limited")),
    )  # fmt: skip


@dataclass(frozen=True)
class Starts:
    rate: float
    jobs: int
    span: float  # seconds from the first start to the last
    lateness: list[float]  # each job's start less its instant, sorted

    @property
    def ideal(self) -> float:
        return (self.jobs - 1) / self.rate


def starts(url: str, work: Path, rate: float, jobs: int) -> Starts:
    """Burst 1, one conductor, a live worker of 50 slots running the jobs."""
    namespace = f"start{rate:g}"
    limits = {"task:system.echo": {"rate": rate, "burst": 1}}
    with stack(url, work, namespace, rate_limits=limits) as run:
        run.worker(50)
        logs = run.conductors(1)
        path = work / f"{namespace}.jsonl"
        path.write_bytes(b"".join(b'{"task":"system.echo","args":[%d]}\n' % n for n in range(jobs)))
        anyio.run(_dispatch, url, run.keys, path, "backlog:default")
        receipts_key = run.keys.receipts(namespace)
        run.until(lambda: run.redis.hlen(receipts_key) >= jobs, 120)
        receipts = [orjson.loads(raw) for raw in run.redis.hvals(receipts_key)]
    due = {e["job_id"]: float(e["at"]) for e in events(logs, "routed")}
    began = sorted(r["started_at"] for r in receipts)
    lateness = sorted(r["started_at"] - due[r["job_id"]] for r in receipts)
    return Starts(rate, jobs, began[-1] - began[0], lateness)


def window_excess(forwards: list[float], rate: float, burst: int) -> float:
    """The most that the forwards in any closed window exceed burst + rate·width.

    A window worth checking starts and ends at a forward; one holding more than a
    second's worth beyond the burst cannot exceed where a shorter one did not."""
    # In whole microseconds, as Redis's clock gives them: seconds since 1970 as floats
    # are a quarter of a microsecond apart, enough to make a forward exactly one
    # interval after another look early.
    micros = [round(at * 1e6) for at in forwards]
    worst = -float(burst)
    reach = burst + int(rate) + 2
    for i, start in enumerate(micros):
        for j in range(i, min(len(micros), i + reach)):
            worst = max(worst, (j - i + 1) - (burst + rate * (micros[j] - start) / 1e6))
    return worst


async def _dispatch(url: str, keys: Keys, path: Path, backlog: str) -> None:
    async with open_client(url) as client:
        await dispatch_manifest(client, keys, path, backlog, default_registry())


# --- wake-ups and idle -----------------------------------------------------------------


def wake_ups(url: str, work: Path, samples: int) -> tuple[dict[str, list[float]], float]:
    """Dispatch-to-forward latency of the three cases, then the idle conductor's CPU."""
    backlogs = ["backlog:first", "backlog:second", "backlog:third"]
    with stack(url, work, "wake", backlogs=backlogs) as run:
        run.worker(10)
        logs = run.conductors(1)
        waits: dict[str, list[float]] = {
            "third configured backlog": [],
            "backlog created after start": [],
            "requeued dead letter": [],
        }
        for n in range(samples):
            waits["third configured backlog"].append(
                one_dispatch(url, run, logs, f"third{n}", "backlog:third")
            )
            waits["backlog created after start"].append(
                one_dispatch(url, run, logs, f"new{n}", f"backlog:new{n}")
            )
            waits["requeued dead letter"].append(one_requeue(url, run, logs, f"dead{n}"))
    # Idle as deployed: default heartbeat (5 s), three backlogs, after a job went through.
    with stack(url, work, "idle", heartbeat=5.0, backlogs=backlogs) as run:
        run.worker(10)
        logs = run.conductors(1)
        one_dispatch(url, run, logs, "idle", "backlog:third")
        time.sleep(2.0)
        idle = cpu_percent(run.processes[-1][0].pid, 10.0)
    return waits, idle


def one_dispatch(url: str, run: Stack, logs: list[Path], batch: str, backlog: str) -> float:
    path = run.work / f"{batch}.jsonl"
    path.write_bytes(b'{"task":"system.echo","args":[1]}\n')
    started = time.time()
    anyio.run(_dispatch, url, run.keys, path, backlog)
    return forwarded_at(logs, f"{batch}:1") - started


def one_requeue(url: str, run: Stack, logs: list[Path], batch: str) -> float:
    job_id = f"{batch}:1"
    envelope = {"id": job_id, "batch": batch, "task": "system.echo", "args": [1],
                "dispatched_at": time.time()}  # fmt: skip
    record = DeadLetter(job_id=job_id, reason="failed", error="bench", at=time.time(),
                        payload=envelope)  # fmt: skip
    run.redis.rpush(run.keys.dead, orjson.dumps(record))
    started = time.time()
    anyio.run(_requeue, url, run.keys, job_id)
    return forwarded_at(logs, job_id) - started


async def _requeue(url: str, keys: Keys, job_id: str) -> None:
    async with open_client(url) as client:
        groups = deadletters.group(await deadletters.read_all(client, keys))
        (result,) = await deadletters.requeue(client, keys, {job_id: groups[job_id]})
        assert result.outcome == "requeued", result


def forwarded_at(logs: list[Path], job_id: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events(logs, "routed"):
            if event.get("job_id") == job_id:
                return float(event["at"])
        time.sleep(0.005)
    raise TimeoutError(f"{job_id} was not forwarded within {timeout:g} s")


def cpu_percent(pid: int, seconds: float) -> float:
    before, started = _cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)
    used = (_cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK")
    return 100 * used / (time.monotonic() - started)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


if __name__ == "__main__":
    main()
