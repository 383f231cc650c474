"""Schedules fired by real conductors: one batch per tick however many conductors run,
each verified; pause, resume and `schedules run`; a planner with nothing to do or that
fails is an outcome, not a crash."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import StackFactory


def _schedule(**extra: Any) -> dict[str, Any]:
    return {
        "name": "tick", "workflow": "system_test", "backlog": "backlog:default",
        "args": ["--mode", "debug", "--count", "2"], "every": "2s", **extra,
    }  # fmt: skip


@pytest.mark.serial  # timed: ticks 2 s apart or a release within 1 s
def test_two_conductors_fire_one_batch_per_tick_each_verified(
    stack: StackFactory, tmp_path: Path
) -> None:
    """A schedule ticking every 2 s under two conductors: each tick is one batch (named
    for the tick, 2 s apart, none twice), every batch verifies, and the two
    conductors' logs together say `schedule_dispatched` once per batch."""
    # queue, not skip: a tick that finds the last batch unsettled under load still counts
    # (a look delayed by the load catches up: every tick fires)
    live = stack(schedules=[_schedule(overlap="queue")])
    live.worker("metal", 2)
    first, second = live.conductor(), live.conductor()
    live.wait_for(lambda: len(_batches(live)) >= 4, "4 ticks", timeout=30)
    live.stop_process(first)
    live.stop_process(second)
    batches = _batches(live)
    ticks = sorted(float(live.redis.zscore(live.keys.batches, b) or 0) for b in batches)
    assert len(batches) >= 4
    labels = sorted(b.split("@")[1] for b in batches)
    seconds = [time.mktime(time.strptime(label, "%Y-%m-%dT%H:%M:%SZ")) for label in labels]
    assert all(b - a == 2 for a, b in itertools.pairwise(seconds)), labels
    assert ticks == sorted(ticks)
    fired = [e["batch"] for p in (first, second) for e in live.events(p, "schedule_dispatched")]
    assert sorted(fired) == sorted(batches)
    live.conductor()  # the last batch may be held behind the one before: let it run
    for batch in batches:
        done = live.command("verify", "--batch", batch, "--wait", "--timeout", "30")
        assert done.returncode == 0, done.stdout + done.stderr


def test_pause_resume_and_run_now(stack: StackFactory) -> None:
    """A paused schedule's ticks pass unfired (recorded `paused`), `schedules run` fires
    one at once; the list shows the last batch and outcome; status --json has them."""
    live = stack(schedules=[_schedule(every="1h")])
    live.worker("metal", 2)
    live.conductor()
    assert live.command("schedules", "pause", "tick").stdout.strip() == "paused tick"
    assert "already paused" in live.command("schedules", "pause", "tick").stdout
    listed = orjson.loads(live.command("schedules", "--json").stdout)
    assert listed[0]["paused"] is not None
    assert listed[0]["next_tick"] is None
    assert live.command("schedules", "resume", "tick").stdout.strip() == "resumed tick"
    ran = live.command("schedules", "run", "tick")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("dispatched: queued 2 of 2 jobs")
    batch = ran.stdout.split("(batch ")[1].rstrip(")\n")
    assert live.command("verify", "--batch", batch, "--wait", "--timeout", "30").returncode == 0
    text = live.command("schedules").stdout
    assert f"last: batch {batch}, dispatched" in text
    assert f"schedule tick: last {batch} dispatched" in live.command("status").stdout
    status = json.loads(live.command("status", "--json").stdout)
    assert status["schedules"][0]["last_batch"] == batch
    assert status["schedules"][0]["outcome"] == "dispatched"


def test_unknown_schedule_gets_a_did_you_mean(stack: StackFactory) -> None:
    """`schedules run` of a name not configured: one line with the closest name, exit 2."""
    live = stack(schedules=[_schedule()])
    done = live.command("schedules", "run", "tock")
    assert done.returncode == 2
    assert "unknown schedule 'tock'; did you mean 'tick'?" in done.stderr


def test_nothing_to_do_and_failure_are_outcomes(stack: StackFactory, tmp_path: Path) -> None:
    """A planner that finds nothing to repair, and one that fails, each leave one log
    line and a visible last outcome; the conductor keeps routing."""
    live = stack()
    assert live.command("bible", "init", "--help").returncode == 0
    clean = tmp_path / "clean.db"
    made = live.command("bible", "init", "--database", str(clean))
    assert made.returncode == 0, made.stderr
    live = stack(
        schedules=[
            {"name": "repair", "workflow": "gap_fill", "backlog": "backlog:repair",
             "args": ["--database", str(clean)], "every": "1h"},
            {"name": "broken", "workflow": "gap_fill", "backlog": "backlog:repair",
             "args": ["--database", str(tmp_path / "missing.db")], "every": "1h"},
        ]
    )  # fmt: skip
    nothing = live.command("schedules", "run", "repair")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.startswith("nothing: ")
    failed = live.command("schedules", "run", "broken")
    assert failed.returncode == 1
    assert failed.stdout.startswith("failed: the planner exited 1")
    listed = {s["name"]: s for s in orjson.loads(live.command("schedules", "--json").stdout)}
    assert listed["repair"]["outcome"] == "nothing"
    assert listed["broken"]["outcome"] == "failed"


def _batches(live: Any) -> list[str]:
    return [b.decode() for b in live.redis.zrange(live.keys.batches, 0, -1)]


@pytest.mark.serial  # timed: ticks 2 s apart or a release within 1 s
def test_paused_ticks_pass_unfired_and_resume_fires_the_next(stack: StackFactory) -> None:
    """Ticks of a paused schedule are recorded `paused`, none dispatched; once resumed,
    the next tick fires (a paused tick holds up no later one)."""
    live = stack(schedules=[_schedule()])
    assert live.command("schedules", "pause", "tick").returncode == 0
    live.worker("metal", 2)
    conductor = live.conductor()
    live.wait_for(lambda: _outcome(live) == "paused", "a paused tick", timeout=30)
    time.sleep(2.5)  # another tick passes paused
    assert _batches(live) == []
    assert live.command("schedules", "resume", "tick").returncode == 0
    live.wait_for(lambda: len(_batches(live)) >= 1, "a tick after resume", timeout=15)
    live.stop_process(conductor)
    assert len(live.events(conductor, "schedule_paused")) >= 2


def _outcome(live: Any) -> str:
    return (live.redis.hget(live.keys.schedule("tick"), "outcome") or b"").decode()
