"""Priorities end to end: dispatch puts each job on its level's list, conductors take the
highest level first (equal levels first in, first out; a level's backlogs in their
configured order), and everything that counts a backlog sums its levels.

The process tests run real conductors and workers with one slot or two, so the order
jobs start in is the order the conductor took them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from orchestrator.dispatch import manifests
from orchestrator.keys import Keys
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import write_manifest

BACKLOG = "backlog:default"
METAL_ONLY = [{"name": "metal", "order": 0}]
SLEEP = 1.0  # seconds each low-priority job runs
HAND_OVER = 0.5  # seconds from a freed slot to the next job's start, at most (a few round trips)


def echo(tag: str, **meta: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"task": "system.echo", "args": [tag]}
    if meta:
        line["meta"] = meta
    return line


def levels(client: redis.Redis, keys: Keys, backlog: str = BACKLOG) -> dict[int, list[str]]:
    """The job ids on each level list of a backlog that holds jobs (level 0 always)."""
    used = [int(level) for level in client.zrange(keys.backlog_levels(backlog), 0, -1)]
    return {
        level: [
            orjson.loads(raw)["id"]
            for raw in client.lrange(keys.backlog_level(backlog, level), 0, -1)
        ]
        for level in (0, *used)
    }


def dispatched(run_cli: CliRunner, path: Path, *options: str) -> str:
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, *options)
    assert result.code == 0, result.err
    return result.out


# --- dispatch ---------------------------------------------------------------------------


def test_each_job_goes_on_its_levels_list_and_the_flag_overrides_meta(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    lines = [echo("a", priority=2), echo("b"), echo("c", priority=-3), echo("d", priority=2)]
    out = dispatched(run_cli, write_manifest(tmp_path / "mixed_01.jsonl", lines))
    assert out.endswith("on backlog:default\n")
    assert levels(sync_redis, keys) == {
        2: ["mixed_01:1", "mixed_01:4"], 0: ["mixed_01:2"], -3: ["mixed_01:3"],
    }  # fmt: skip
    assert sync_redis.zrange(keys.backlog_levels(BACKLOG), 0, -1, withscores=True) == [
        (b"-3", -3.0), (b"2", 2.0),
    ]  # fmt: skip

    out = dispatched(run_cli, write_manifest(tmp_path / "flag_01.jsonl", lines), "--priority", "7")
    assert out.endswith("on backlog:default at priority 7\n")
    assert levels(sync_redis, keys)[7] == [f"flag_01:{n}" for n in range(1, 5)]
    envelopes = [
        orjson.loads(raw) for raw in sync_redis.lrange(keys.backlog_level(BACKLOG, 7), 0, -1)
    ]
    assert {envelope["priority"] for envelope in envelopes} == {7}
    assert envelopes[0]["meta"] == {"priority": 2}  # kept as written; the flag wins

    zero = dispatched(
        run_cli, write_manifest(tmp_path / "zero_01.jsonl", lines[:1]), "--priority", "0"
    )
    assert zero.endswith("at priority 0\n")
    assert levels(sync_redis, keys)[0][-1] == "zero_01:1"


def test_dispatching_with_levels_again_queues_nothing_twice(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's cursor counts jobs in manifest order whatever their level: a second
    dispatch queues nothing, and one after a crash mid-commit queues only the rest."""
    monkeypatch.setattr(manifests, "COMMIT_SLICE", 7)  # several slices, cut across levels
    priorities = [(n * 7) % 5 - 2 for n in range(50)]  # -2..2, mixed
    path = write_manifest(
        tmp_path / "again_01.jsonl", [echo(str(n), priority=p) for n, p in enumerate(priorities)]
    )
    dispatched(run_cli, path)
    expected = {
        level: [f"again_01:{n + 1}" for n, p in enumerate(priorities) if p == level]
        for level in (2, 1, 0, -1, -2)
    }
    assert levels(sync_redis, keys) == expected

    again = dispatched(run_cli, path)
    assert again.startswith("nothing new: all 50 jobs of")
    assert levels(sync_redis, keys) == expected

    # Rewind to where a crash after the first 23 jobs would have left the batch.
    for level, ids in expected.items():
        kept = sum(1 for job_id in ids if int(job_id.rsplit(":", 1)[1]) <= 23)
        sync_redis.ltrim(keys.backlog_level(BACKLOG, level), 0, kept - 1)
    sync_redis.hset(keys.batch("again_01"), "queued", 23)
    finished = dispatched(run_cli, path)
    assert finished.startswith(f"queued 27 jobs of {path}"), finished
    assert levels(sync_redis, keys) == expected


def test_priority_out_of_range_is_one_line_and_exit_2(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    path = write_manifest(tmp_path / "range_01.jsonl", [echo("a")])
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--priority", "1001")
    assert result.code == 2
    assert "1001 is out of range: a priority is -1000..1000" in result.err
    bad_meta = write_manifest(tmp_path / "range_02.jsonl", [echo("a", priority=-1001)])
    result = run_cli("dispatch", str(bad_meta), "--backlog", BACKLOG)
    assert result.code == 2
    assert result.err.startswith(f"orchestrator: error: {bad_meta}:1: meta.priority")
    assert result.err.count("\n") == 1
    help_text = run_cli("dispatch", "--help").out
    assert "--priority N" in help_text
    assert "-1000..1000" in help_text


def test_status_sums_a_backlogs_levels(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    lines = [echo("a", priority=5), echo("b"), echo("c", priority=-1), echo("d", priority=5)]
    dispatched(run_cli, write_manifest(tmp_path / "depth_01.jsonl", lines))
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    (backlog,) = orjson.loads(result.out)["backlogs"]
    assert backlog["depth"] == 4
    assert backlog["levels"] == [
        {"level": 5, "depth": 2}, {"level": 0, "depth": 1}, {"level": -1, "depth": 1},
    ]  # fmt: skip
    assert "default 4 (priority +5: 2, 0: 1, -1: 1)" in run_cli("status").out


# --- conductors -------------------------------------------------------------------------


def test_high_priority_jobs_start_within_a_job_of_their_dispatch(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    """1,000 low-priority sleepers fill metal; 5 jobs dispatched later at a higher
    priority start as soon as a slot frees, ahead of the 990-odd still waiting."""
    run = stack(pools=METAL_ONLY)
    run.worker("metal", 2)
    run.conductor()
    low = [{"task": "system.sleep", "args": [SLEEP], "meta": {"priority": -1}}] * 1000
    dispatched(run_cli, write_manifest(tmp_path / "low_01.jsonl", low))
    run.wait_for(lambda: len(run.receipts("low_01")) >= 3, "metal busy with low_01", timeout=10)

    dispatched(
        run_cli,
        write_manifest(tmp_path / "high_01.jsonl", [echo(str(n)) for n in range(5)]),
        "--priority",
        "5",
    )
    at = float(run.redis.hget(run.keys.batch("high_01"), "dispatched_at") or 0)  # all pushed
    high = run.wait_for_receipts("high_01", 5, timeout=10)

    assert all(receipt["status"] == "succeeded" for receipt in high)
    starts = sorted(receipt["started_at"] for receipt in high)
    assert starts[-1] - at <= SLEEP + HAND_OVER, [round(s - at, 3) for s in starts]
    # Ahead of the low-priority jobs: between the dispatch and the last high start, at
    # most one low job per slot started (one the conductor was forwarding meanwhile).
    overtaken = [
        r for r in run.receipts("low_01") if r["started_at"] and at < r["started_at"] < starts[-1]
    ]
    assert len(overtaken) <= 2, overtaken
    assert run.redis.llen(run.keys.backlog_level(BACKLOG, -1)) > 900


def test_levels_highest_first_equal_ones_in_order_and_backlogs_in_configured_order(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    """With one slot, jobs start one at a time in the order the conductor takes them."""
    run = stack(pools=METAL_ONLY, backlogs=[BACKLOG, "backlog:other"])
    # Queued before any conductor runs, oldest first.
    dispatched(run_cli, write_manifest(tmp_path / "early_01.jsonl", [echo("e")] * 3))
    other = write_manifest(tmp_path / "other_01.jsonl", [echo("o")] * 2)
    assert (
        run_cli("dispatch", str(other), "--backlog", "backlog:other", "--priority", "3").code == 0
    )
    late = [echo("l", priority=-5)] * 3  # --priority overrides a line's own
    dispatched(run_cli, write_manifest(tmp_path / "late_01.jsonl", late), "--priority", "3")
    mixed = [echo("m", priority=1), echo("m"), echo("m", priority=1), echo("m", priority=5)]
    dispatched(run_cli, write_manifest(tmp_path / "mixed_01.jsonl", mixed))

    run.worker("metal", 1)
    run.conductor()
    batches = ("early_01", "other_01", "late_01", "mixed_01")
    receipts = [
        r
        for batch, n in zip(batches, (3, 2, 3, 4), strict=True)
        for r in run.wait_for_receipts(batch, n)
    ]
    order = [r["job_id"] for r in sorted(receipts, key=lambda r: r["started_at"])]
    assert order == [
        "mixed_01:4",  # level 5
        "late_01:1", "late_01:2", "late_01:3",  # level 3: backlog:default first (configured)
        "other_01:1", "other_01:2",  # … then backlog:other, though dispatched before
        "mixed_01:1", "mixed_01:3",  # level 1
        "early_01:1", "early_01:2", "early_01:3", "mixed_01:2",  # level 0, first in first out
    ]  # fmt: skip
    for backlog in (BACKLOG, "backlog:other"):  # every level found empty left the set
        key = run.keys.backlog_levels(backlog)
        run.wait_for(lambda key=key: run.redis.zcard(key) == 0, f"{key} empty")
