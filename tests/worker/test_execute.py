"""The Execute stage end to end: real worker and conductor processes, a real Redis.

What a user would check is what is asserted: which pool ran each job (receipts), how
many ran at once (receipt intervals), when jobs were forwarded (the conductor's
`routed` log lines), and that every job of a batch has a receipt.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import orjson
import pytest

from tests.conftest import StackFactory
from tests.live_stack import Stack, max_overlap, write_manifest


def sleepers(count: int, low: float, high: float, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {"task": "system.sleep", "args": [round(rng.uniform(low, high), 2)]} for _ in range(count)
    ]


def intervals(receipts: list[dict[str, object]], pool: str) -> list[tuple[float, float]]:
    return [(r["started_at"], r["ended_at"]) for r in receipts if r["pool"] == pool]


def test_spills_to_cloud_when_metal_full(stack: StackFactory, tmp_path: Path) -> None:
    run = stack()
    run.worker("metal", 4)
    run.worker("cloud", 10)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "spill_01.jsonl", sleepers(10, 1, 2)))
    receipts = run.wait_for_receipts("spill_01", 10)
    assert all(r["status"] == "succeeded" for r in receipts)
    assert sorted(r["pool"] for r in receipts) == ["cloud"] * 6 + ["metal"] * 4
    assert max_overlap(intervals(receipts, "metal")) == 4
    assert max_overlap(intervals(receipts, "cloud")) == 6


def test_cloud_max_in_flight_caps_spillover(stack: StackFactory, tmp_path: Path) -> None:
    pools = [{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "max_in_flight": 3}]
    run = stack(pools=pools)
    run.worker("metal", 4)
    run.worker("cloud", 10)
    conductor = run.conductor()
    run.dispatch(write_manifest(tmp_path / "capped_01.jsonl", sleepers(10, 1, 2)))
    receipts = run.wait_for_receipts("capped_01", 10)
    assert all(r["status"] == "succeeded" for r in receipts)
    assert max_overlap(intervals(receipts, "cloud")) == 3
    assert max_overlap(intervals(receipts, "metal")) == 4
    reasons = {e["reason"] for e in run.events(conductor, "routed")}
    assert reasons == {"metal_free", "metal_full_spill"}


def test_rule_sends_image_tasks_to_cloud_while_metal_idle(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(rules=[{"task": "image.*", "pool": "cloud"}])
    run.worker("metal", 4)
    run.worker("cloud", 2)
    conductor = run.conductor()
    lines = [{"task": "image.resize", "args": [w]} for w in range(6)]
    lines += [{"task": "system.echo", "args": ["plain"]}]
    run.dispatch(write_manifest(tmp_path / "rule_01.jsonl", lines))
    receipts = {r["job_id"]: r for r in run.wait_for_receipts("rule_01", 7)}
    assert {receipts[f"rule_01:{n}"]["pool"] for n in range(1, 7)} == {"cloud"}
    assert receipts["rule_01:7"]["pool"] == "metal"
    routed = run.events(conductor, "routed")
    assert {e["reason"] for e in routed if e["task"] == "image.resize"} == {"rule"}


@pytest.mark.serial  # timed windows: alone on the machine, after the parallel pass
def test_rate_limit_holds_in_every_window_and_spares_other_tasks(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(rate_limits={"task:system.echo": {"rate": 5, "burst": 1}})
    run.worker("metal", 10)
    conductor = run.conductor()
    lines = [{"task": "system.echo", "args": [n]} for n in range(20)]
    lines += [{"task": "system.sleep", "args": [0]} for _ in range(10)]
    run.dispatch(write_manifest(tmp_path / "limited_01.jsonl", lines))
    run.wait_for_receipts("limited_01", 30)
    routed = run.events(conductor, "routed")
    limited = sorted(_seconds(e["timestamp"]) for e in routed if e["task"] == "system.echo")
    free = sorted(_seconds(e["timestamp"]) for e in routed if e["task"] == "system.sleep")
    assert len(limited) == 20
    for i, start in enumerate(limited):
        for j in range(i, len(limited)):
            # GCRA with burst 1: at most 1 + 5 * width forwards in any closed window.
            assert j - i + 1 <= 1 + 5 * (limited[j] - start) + 0.05 * 5
    assert limited[-1] - limited[0] >= 3.5  # 20 jobs at 5/s cannot take less than 3.8 s
    assert free[-1] - limited[0] < 1.5  # the unlimited jobs did not queue behind them
    assert len(run.events(conductor, "rate_limited")) >= 18


def test_killed_conductor_loses_nothing(stack: StackFactory, tmp_path: Path) -> None:
    run = stack()
    run.worker("metal", 4)
    run.worker("cloud", 4)
    first = run.conductor()
    run.dispatch(write_manifest(tmp_path / "crash_01.jsonl", sleepers(40, 0.2, 0.5)))
    run.wait_for(lambda: len(run.receipts("crash_01")) >= 8, "a quarter of the batch")
    first.send_signal(signal.SIGKILL)
    first.wait()
    run.conductor()
    receipts = run.wait_for_receipts("crash_01", 40, timeout=90)
    assert sorted(r["job_id"] for r in receipts) == sorted(f"crash_01:{n}" for n in range(1, 41))
    assert all(r["status"] == "succeeded" for r in receipts)


@pytest.mark.parametrize("payload", [b"not json at all", b'{"id": "x:1", "task": "os.system"}'])
def test_bad_payload_on_a_backlog_is_dead_lettered_and_the_conductor_goes_on(
    stack: StackFactory, tmp_path: Path, payload: bytes
) -> None:
    run = stack()
    run.worker("metal", 2)
    conductor = run.conductor()
    run.redis.rpush(run.keys.backlog("backlog:default"), payload)
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "a dead letter")
    run.dispatch(
        write_manifest(tmp_path / "after_01.jsonl", [{"task": "system.echo", "args": [1]}])
    )
    assert run.wait_for_receipts("after_01", 1)[0]["status"] == "succeeded"
    (event,) = run.events(conductor, "dead_lettered")
    assert event["reason"] == "invalid_payload"


def test_failing_job_is_retried_then_dead_lettered_with_its_error(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(max_tries=2)
    run.worker("metal", 2)
    run.conductor()
    lines = [
        {"task": "image.broken", "args": []},
        {"task": "image.flaky", "args": [str(tmp_path / "mark")]},
    ]
    run.dispatch(write_manifest(tmp_path / "fails_01.jsonl", lines))
    receipts = {r["job_id"]: r for r in run.wait_for_receipts("fails_01", 2)}
    broken, flaky = receipts["fails_01:1"], receipts["fails_01:2"]
    assert (broken["status"], broken["attempt"]) == ("failed", 2)
    assert broken["error"] == "ValueError: always broken"
    assert (flaky["status"], flaky["attempt"]) == ("succeeded", 2)
    (dead,) = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    assert (dead["job_id"], dead["reason"]) == ("fails_01:1", "failed")
    assert dead["receipt"]["error"] == "ValueError: always broken"


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_job_over_its_timeout_gets_a_receipt_and_gives_its_slot_back(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(job_timeout=1, max_tries=1)
    run.worker("metal", 2)
    run.conductor()
    run.dispatch(
        write_manifest(tmp_path / "slow_01.jsonl", [{"task": "system.sleep", "args": [3]}])
    )
    (receipt,) = run.wait_for_receipts("slow_01", 1)
    assert receipt["status"] == "failed"
    assert receipt["error"].startswith("TimeoutError")
    assert run.redis.zcard(run.keys.inflight("metal")) == 0
    (dead,) = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    assert (dead["job_id"], dead["reason"]) == ("slow_01:1", "failed")


def test_unserializable_job_is_dead_lettered_and_the_next_one_runs(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack()
    run.worker("metal", 2)
    conductor = run.conductor()
    # JSON allows the integer; orjson (and so arq) does not. Dispatch refuses it, so it
    # comes straight onto the backlog, as a writer other than dispatch might put it.
    backlog = run.keys.backlog("backlog:default")
    for n, arg in ((1, 2**70), (2, 1)):
        envelope = f'{{"id": "big_01:{n}", "batch": "big_01", "task": "system.echo", '
        run.redis.rpush(backlog, envelope + f'"args": [{arg}], "dispatched_at": 1.0}}')
    receipts = run.wait_for_receipts("big_01", 1)
    assert [(r["job_id"], r["status"]) for r in receipts] == [("big_01:2", "succeeded")]
    assert conductor.poll() is None
    (event,) = run.events(conductor, "dead_lettered")
    assert (event["job_id"], event["reason"]) == ("big_01:1", "unserializable")


def test_draining_worker_takes_no_new_jobs_and_finishes_its_own(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = stack(grace_period=10)
    metal = run.worker("metal", 2)
    run.worker("cloud", 2)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "drain_01.jsonl", sleepers(2, 1.5, 1.5)))
    run.wait_for(lambda: run.redis.zcard(run.keys.inflight("metal")) == 2, "metal busy")
    metal.send_signal(signal.SIGTERM)
    run.wait_for(lambda: _slots(run, "metal") == 0, "metal announcing no slots")
    run.dispatch(write_manifest(tmp_path / "drain_02.jsonl", sleepers(2, 0.1, 0.1)))
    first = run.wait_for_receipts("drain_01", 2)
    later = run.wait_for_receipts("drain_02", 2)
    assert {(r["pool"], r["status"]) for r in first} == {("metal", "succeeded")}
    assert {(r["pool"], r["status"]) for r in later} == {("cloud", "succeeded")}
    assert metal.wait(15) == 0
    assert run.redis.zcard(run.keys.pool_queue("metal")) == 0


def test_jobs_waiting_to_spill_stay_in_line_for_metal(stack: StackFactory, tmp_path: Path) -> None:
    pools = [{"name": "metal", "order": 0}, {"name": "cloud", "order": 1, "spill_after": 30}]
    run = stack(pools=pools)
    run.worker("metal", 1)
    run.worker("cloud", 4)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "patient_01.jsonl", sleepers(6, 0.2, 0.2)))
    receipts = run.wait_for_receipts("patient_01", 6, timeout=25)
    assert {r["pool"] for r in receipts} == {"metal"}  # all ran on metal, before 30 s
    assert run.redis.zcard(run.keys.deferred) == 0


def _slots(run: Stack, pool: str) -> int:
    (worker,) = run.redis.smembers(run.keys.workers(pool))
    return int(run.redis.hget(run.keys.worker(pool, worker.decode()), "slots") or -1)
