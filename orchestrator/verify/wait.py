"""`verify --wait`: pass after pass until the batch settles, and a warning while it cannot.

Jobs settle only while a conductor forwards them and a worker runs them; waiting on a
batch with neither running used to be endless and silent. So after each pass that
leaves jobs pending, Redis is asked whether a conductor and a worker are alive (by their
heartbeat keys, which lapse with their TTL: the sets of ids outlive a killed process),
and whether the pending jobs' tasks are parked for want of a worker that runs them (the
conductor's `no_worker` lists). A stall is told at once, then every `WARN_EVERY` seconds
while it lasts, and at once again when it changes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from redis.asyncio import Redis

from orchestrator.keys import Keys
from orchestrator.verify.verifier import Report

POLL_INTERVAL = 0.5  # seconds between passes, at the least
WARN_EVERY = 30.0  # seconds between repeats of one stall's warning
SHOWN_TASKS = 3  # tasks named in a line; the rest are an ellipsis


async def wait_until_settled(
    check: Callable[[], Awaitable[Report]],
    *,
    patience: float | None = None,
    on_pass: Callable[[Report], None] | None = None,
    between: Callable[[Report], Awaitable[None]] | None = None,
) -> Report:
    """Pass after pass until nothing can change, or `patience` seconds are up.

    Passes are never cut short, so the last report is whole; the pause between them
    grows with how long a pass takes, so a huge batch is not re-read back to back.
    `between` sees each report that another pass will follow.
    """
    deadline = None if patience is None else time.monotonic() + patience
    while True:
        started = time.monotonic()
        report = await check()
        if on_pass is not None:
            on_pass(report)
        now = time.monotonic()
        if not report.may_change or (deadline is not None and now >= deadline):
            return report
        if between is not None:
            await between(report)
            now = time.monotonic()
        pause = max(POLL_INTERVAL, 2 * (now - started))
        await anyio.sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))


@dataclass(frozen=True)
class Stall:
    kind: str  # what is missing; a warning is repeated at once when it changes
    message: str


class StallWarner:
    """`between` for `wait_until_settled`: warns through `warn` while jobs cannot settle."""

    def __init__(
        self, redis: Redis, keys: Keys, pools: Sequence[str], warn: Callable[[str], None]
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.pools = list(pools)
        self.warn = warn
        self._told: tuple[str, float] | None = None  # the stall last told, and when

    async def __call__(self, report: Report) -> None:
        stall = await find_stall(self.redis, self.keys, self.pools, report)
        if stall is None:
            self._told = None
            return
        now = time.monotonic()
        if self._told is None or self._told[0] != stall.kind or now - self._told[1] >= WARN_EVERY:
            self.warn(f"orchestrator: warning: {stall.message}")
            self._told = (stall.kind, now)


async def find_stall(
    redis: Redis, keys: Keys, pools: Sequence[str], report: Report
) -> Stall | None:
    """Why the pending jobs of `report` cannot settle as things are, or None."""
    pending = report.totals["pending"]
    if not pending:
        return None
    conductors, workers, parked = await _alive(redis, keys, pools)
    missing = None
    if not conductors and not workers:
        missing = ("nothing", "no conductor nor worker is running", "start both: orchestrator up")
    elif not conductors:
        missing = (
            "conductor",
            "no conductor is running",
            "start one: orchestrator conductor, or orchestrator up",
        )
    elif not workers:
        missing = (
            "worker",
            "no live worker in any pool",
            "start one: orchestrator worker --pool NAME, or orchestrator up",
        )
    if missing is not None:
        kind, what, hint = missing
        return Stall(kind, f"{_jobs(pending)} pending but {what} ({hint})")
    stuck = {
        task: tally.outcomes["pending"]
        for task, tally in sorted(report.tasks.items())
        if task in parked and tally.outcomes["pending"]
    }
    if not stuck:
        return None
    them = "it" if len(stuck) == 1 else "them"
    return Stall(
        "no_worker " + " ".join(stuck),
        f"{_jobs(sum(stuck.values()))} of {_names(stuck)} pending but no live worker runs "
        f"{them} (start a worker whose task_packages include {them})",
    )


def pending_tasks(report: Report) -> str:
    """The pending jobs per task, most first: `5 image.process, 2 system.echo`."""
    counts = {t: tally.outcomes["pending"] for t, tally in report.tasks.items()}
    ranked = sorted((t for t, n in counts.items() if n), key=lambda t: (-counts[t], t))
    return _names({task: counts[task] for task in ranked}, counted=True)


async def _alive(redis: Redis, keys: Keys, pools: Sequence[str]) -> tuple[int, int, set[str]]:
    """Live conductors, live workers (over all pools), and the tasks parked for want of a
    worker; two round trips."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.conductors)
        for pool in pools:
            pipe.smembers(keys.workers(pool))
        pipe.zrange(keys.no_worker_tasks, 0, -1)
        conductors, *members, parked = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for conductor in conductors:
            pipe.exists(keys.conductor(conductor.decode()))
        for pool, workers in zip(pools, members, strict=True):
            for worker in workers:
                pipe.exists(keys.worker(pool, worker.decode()))
        beats: list[int] = await pipe.execute()
    live_conductors = sum(beats[: len(conductors)])
    # A member is `task`, or `task@pool` for jobs only that pool may run.
    tasks = {member.decode().partition("@")[0] for member in parked}
    return live_conductors, sum(beats[len(conductors) :]), tasks


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _names(counts: dict[str, int], *, counted: bool = False) -> str:
    shown = [f"{n} {task}" if counted else task for task, n in counts.items()][:SHOWN_TASKS]
    return ", ".join(shown + (["…"] if len(counts) > SHOWN_TASKS else []))
