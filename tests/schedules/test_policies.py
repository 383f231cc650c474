"""Schedule policies against real conductors: a tick missed while no conductor ran
(`missed`), and a tick that comes while the last run's batch is still running
(`overlap`)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.schedule import ScheduleSettings, batch_name
from tests.conftest import StackFactory

DAY = 86400.0


def _daily(name: str, missed: str) -> dict[str, Any]:
    return {
        "name": name, "workflow": "system_test", "backlog": "backlog:default",
        "args": ["--mode", "debug", "--count", "1"], "every": "1d", "missed": missed,
    }  # fmt: skip


def test_missed_ticks_fire_once_or_are_skipped(stack: StackFactory) -> None:
    """Three daily ticks passed while no conductor ran: under `run_once` the latest
    fires once at start (its batch named for it, the lateness recorded), under `skip`
    none fires and the outcome says `missed`."""
    now = time.time()
    due = (now // DAY) * DAY
    if now - due < 60:
        pytest.skip("too close to midnight UTC for a tick to count as missed")
    schedules = [_daily("once", "run_once"), _daily("skipper", "skip")]
    live = stack(schedules=schedules)
    for name in ("once", "skipper"):
        earlier = due - 3 * DAY
        live.redis.hset(live.keys.schedule(name), mapping={"since": earlier, "last_tick": earlier})
    live.worker("metal", 1)
    conductor = live.conductor()
    fired = batch_name(ScheduleSettings.model_validate(schedules[0]), due)
    live.wait_for(lambda: live.redis.exists(live.keys.batch(fired)) == 1, fired)
    live.wait_for(
        lambda: _outcome(live, "skipper") == "missed" and _outcome(live, "once") == "dispatched",
        "outcomes",
    )
    listed = {s["name"]: s for s in orjson.loads(live.command("schedules", "--json").stdout)}
    assert listed["once"]["last_batch"] == fired
    assert listed["once"]["lateness"] >= 60
    assert listed["skipper"]["last_batch"] is None
    assert [b.decode() for b in live.redis.zrange(live.keys.batches, 0, -1)] == [fired]
    live.stop_process(conductor)
    missed = live.events(conductor, "schedule_ticks_missed")
    assert sorted((e["schedule"], e["count"]) for e in missed) == [("once", 2), ("skipper", 2)]


@pytest.mark.serial  # timed: ticks 2 s apart or a release within 1 s
def test_overlap_skip_and_queue(stack: StackFactory, tmp_path: Path) -> None:
    """Ticks every 2 s of a 3 s job: `skip` skips the ticks that find the last batch
    running, `queue` holds each new batch behind the last; either way no two batches of
    one schedule ever run at once (receipts' start and end)."""
    sleeper = ["--mode", "stress_supervisor", "--count", "1", "--min-seconds", "3",
               "--max-seconds", "3"]  # fmt: skip
    schedules = [
        {"name": "skipping", "workflow": "system_test", "backlog": "backlog:a",
         "args": sleeper, "every": "2s", "overlap": "skip"},
        {"name": "queueing", "workflow": "system_test", "backlog": "backlog:b",
         "args": sleeper, "every": "2s", "overlap": "queue"},
    ]  # fmt: skip
    live = stack(schedules=schedules, backlogs=["backlog:a", "backlog:b"])
    live.worker("metal", 4)
    conductors = [live.conductor(), live.conductor()]
    live.wait_for(lambda: len(_batches(live, "queueing")) >= 3, "3 queueing batches", 40)
    for conductor in conductors:
        live.stop_process(conductor)
    skipped = [e for c in conductors for e in live.events(c, "schedule_skipped")]
    assert skipped
    assert all("has not settled" in e["detail"] for e in skipped)
    for name in ("skipping", "queueing"):
        runs = []
        for batch in _batches(live, name):
            receipts = live.receipts(batch)
            runs += [(r["started_at"], r["ended_at"]) for r in receipts if r["started_at"]]
        runs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), (name, runs)
    queued = _batches(live, "queueing")
    afters = [live.redis.hget(live.keys.batch(b), "after") for b in queued]
    assert afters[0] is None
    assert [a.decode() for a in afters[1:]] == queued[:-1]


def _outcome(live: Any, name: str) -> str:
    return (live.redis.hget(live.keys.schedule(name), "outcome") or b"").decode()


def _batches(live: Any, schedule: str) -> list[str]:
    names = [b.decode() for b in live.redis.zrange(live.keys.batches, 0, -1)]
    return sorted(b for b in names if b.startswith(schedule + "@"))


def test_settings_model_is_what_the_tests_use() -> None:
    """The dicts above are valid schedules (a typo here would test nothing)."""
    for schedule in (_daily("a", "skip"), _daily("b", "run_once")):
        assert ScheduleSettings.model_validate(schedule).period == DAY


def test_a_planner_over_its_time_is_stopped(stack: StackFactory) -> None:
    """A planner still running at `plan_timeout` is stopped: outcome failed, saying so."""
    slow = {**_daily("slow", "skip"), "plan_timeout": 0.05}
    live = stack(schedules=[slow])
    done = live.command("schedules", "run", "slow")
    assert done.returncode == 1
    assert done.stdout.startswith("failed: the planner ran over plan_timeout (0.05 s)")
    assert live.redis.zcard(live.keys.batches) == 0


def test_a_schedule_after_another_waits_for_its_latest_batch(
    stack: StackFactory, tmp_path: Path
) -> None:
    """`after = ["scan"]`: the repair tick's batch is held until the scan's latest batch
    settled, and none of its jobs starts before the scan's last one ended."""
    scan = {**_daily("scan", "skip"), "args": ["--mode", "stress_supervisor", "--count", "2",
            "--min-seconds", "2", "--max-seconds", "2"]}  # fmt: skip
    repair = {**_daily("repair", "skip"), "after": ["scan"]}
    live = stack(schedules=[scan, repair])
    live.worker("metal", 2)
    live.conductor()
    first = live.command("schedules", "run", "scan")
    assert first.returncode == 0, first.stderr
    second = live.command("schedules", "run", "repair")
    assert second.returncode == 0, second.stderr
    scan_batch = first.stdout.split("(batch ")[1].rstrip(")\n")
    repair_batch = second.stdout.split("(batch ")[1].rstrip(")\n")
    assert f"held until {scan_batch} settled" in second.stdout
    scan_runs = live.wait_for_receipts(scan_batch, 2)
    repair_runs = live.wait_for_receipts(repair_batch, 1)
    assert min(r["started_at"] for r in repair_runs) >= max(r["ended_at"] for r in scan_runs)


def test_cancel_previous_cancels_the_running_batch(stack: StackFactory) -> None:
    """`overlap = "cancel_previous"`: a tick that finds the last batch running cancels
    it (its running job stopped, receipt `cancelled`) and dispatches its own."""
    long = {**_daily("long", "skip"), "overlap": "cancel_previous",
            "args": ["--mode", "stress_supervisor", "--count", "1", "--min-seconds", "60",
                     "--max-seconds", "60"]}  # fmt: skip
    live = stack(schedules=[long])
    live.worker("metal", 2)
    live.conductor()
    first = live.command("schedules", "run", "long")
    batch = first.stdout.split("(batch ")[1].rstrip(")\n")
    live.wait_running(batch, 1)
    time.sleep(1.1)  # the next run's batch is named for the next second
    second = live.command("schedules", "run", "long")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("dispatched: ")
    live.wait_for(
        lambda: [r["status"] for r in live.receipts(batch)] == ["cancelled"],
        f"{batch}'s job cancelled",
        timeout=30,
        explain=lambda: f"receipts {live.receipts(batch)}; {second.stderr}",
    )
