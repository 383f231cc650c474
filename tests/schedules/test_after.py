"""`dispatch --after`: a held batch waits for the batches it names, against real
conductors and workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import StackFactory
from tests.live_stack import write_manifest


def _sleepers(path: Path, count: int, seconds: float) -> Path:
    return write_manifest(path, [{"task": "system.sleep", "args": [seconds]} for _ in range(count)])


@pytest.mark.serial  # timed: ticks 2 s apart or a release within 1 s
def test_held_batch_starts_after_the_last_job_of_the_awaited_one_ended(
    stack: StackFactory, tmp_path: Path
) -> None:
    """With two conductors, no job of the held batch starts before the last job of the
    batch it waits for has ended (receipts' start and end), and it is released within a
    second of that."""
    live = stack()
    conductors = [live.conductor(), live.conductor()]
    scan = _sleepers(tmp_path / "scan.jsonl", 6, 0.5)
    repair = _sleepers(tmp_path / "repair.jsonl", 4, 0.05)
    assert live.command("dispatch", str(scan), "--backlog", "backlog:a").returncode == 0
    held = live.command("dispatch", str(repair), "--backlog", "backlog:a", "--after", "scan")
    assert held.returncode == 0, held.stderr
    assert "held until scan settled" in held.stdout
    status = live.redis.hgetall(live.keys.batch("repair"))
    assert status.get(b"held") == b"waiting", status
    shown = live.command("verify", "--batch", "repair")
    assert shown.returncode == 3
    assert "held (waiting): waiting for batch scan: " in shown.stdout
    status = json.loads(live.command("status", "--json").stdout)
    assert [held["batch"] for held in status["held"]] == ["repair"]
    live.worker("metal", 4)
    scan_receipts = live.wait_for_receipts("scan", 6)
    repair_receipts = live.wait_for_receipts("repair", 4)
    last_end = max(r["ended_at"] for r in scan_receipts)
    first_start = min(r["started_at"] for r in repair_receipts)
    assert first_start >= last_end
    released_at = float(live.redis.hget(live.keys.batch("repair"), "released_at") or 0)
    assert released_at - last_end < 1.0
    assert all(r["status"] == "succeeded" for r in repair_receipts)
    for conductor in conductors:
        live.stop_process(conductor)
    released = [e for c in conductors for e in live.events(c, "batch_released")]
    assert [e["batch"] for e in released] == ["repair"]


def test_unknown_batch_and_cycle_are_refused(stack: StackFactory, tmp_path: Path) -> None:
    """An awaited batch that does not exist is refused with a did-you-mean; a cycle
    names its batches; nothing is queued either way."""
    live = stack()
    scan = _sleepers(tmp_path / "scan.jsonl", 1, 0.01)
    repair = _sleepers(tmp_path / "repair.jsonl", 1, 0.01)
    assert live.command("dispatch", str(scan), "--backlog", "a").returncode == 0
    typo = live.command("dispatch", str(repair), "--backlog", "a", "--after", "scna")
    assert typo.returncode == 2
    assert "--after scna: no such batch; did you mean scan?" in typo.stderr
    assert not live.redis.exists(live.keys.batch("repair"))
    assert (
        live.command("dispatch", str(repair), "--backlog", "a", "--after", "scan").returncode == 0
    )
    again = live.command("dispatch", str(scan), "--backlog", "a", "--after", "repair")
    assert again.returncode == 2
    assert "a cycle: scan after repair after scan" in again.stderr
    # a batch of a producer's bare lines (as the conductor records one) is never done
    live.redis.hset(live.keys.batch("adhoc:a:2026-12-06"), mapping={
        "created_at": "1.0", "backlog": "backlog:a", "adhoc": "1", "complete": "1",
    })  # fmt: skip
    other = _sleepers(tmp_path / "other.jsonl", 1, 0.01)
    adhoc = live.command("dispatch", str(other), "--backlog", "a", "--after", "adhoc:a:2026-12-06")
    assert adhoc.returncode == 2
    assert "a batch of bare lines a producer pushes is never done" in adhoc.stderr
    assert not live.redis.exists(live.keys.batch("other"))


def test_failed_input_holds_until_release(stack: StackFactory, tmp_path: Path) -> None:
    """Under the default policy a batch whose input failed stays held, saying why,
    until `orchestrator release`; `--after-policy run` runs anyway."""
    live = stack(max_tries=1)
    live.worker("metal", 2)
    live.conductor()
    scan = write_manifest(tmp_path / "scan.jsonl", [{"task": "image.broken", "args": []}])
    repair = _sleepers(tmp_path / "repair.jsonl", 2, 0.01)
    anyway = _sleepers(tmp_path / "anyway.jsonl", 1, 0.01)
    assert live.command("dispatch", str(scan), "--backlog", "a").returncode == 0
    assert (
        live.command("dispatch", str(repair), "--backlog", "a", "--after", "scan").returncode == 0
    )
    run = live.command(
        "dispatch", str(anyway), "--backlog", "a", "--after", "scan", "--after-policy", "run"
    )
    assert run.returncode == 0, run.stderr
    live.wait_for_receipts("anyway", 1)
    live.wait_for(
        lambda: bytes(live.redis.hget(live.keys.batch("repair"), "held") or b"") == b"blocked",
        "repair blocked",
    )
    reason = live.redis.hget(live.keys.batch("repair"), "waiting_for") or b""
    assert b"batch scan settled with 1 not succeeded" in reason
    assert live.redis.hlen(live.keys.receipts("repair")) == 0
    released = live.command("release", "repair")
    assert released.returncode == 0, released.stderr
    assert all(r["status"] == "succeeded" for r in live.wait_for_receipts("repair", 2))


def test_cancelling_a_held_batch_cancels_its_jobs(stack: StackFactory, tmp_path: Path) -> None:
    """`cancel` of a held batch finds its jobs (each gets its `cancelled` receipt) and
    the batch is held no more; the awaited batch runs on untouched."""
    live = stack()
    live.worker("metal", 2)
    live.conductor()
    scan = _sleepers(tmp_path / "scan.jsonl", 1, 60.0)
    repair = _sleepers(tmp_path / "repair.jsonl", 3, 0.01)
    assert live.command("dispatch", str(scan), "--backlog", "a").returncode == 0
    assert (
        live.command("dispatch", str(repair), "--backlog", "a", "--after", "scan").returncode == 0
    )
    cancelled = live.command("cancel", "repair")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled 3 jobs (held by --after 3)" in cancelled.stdout
    assert sorted(r["status"] for r in live.receipts("repair")) == ["cancelled"] * 3
    assert not live.redis.sismember(live.keys.held_batches, "repair")
    live.wait_running("scan", 1)  # untouched: still running
    assert live.command("cancel", "scan", "--running").returncode == 0


def test_after_policy_cancel_and_a_batch_queued_before(stack: StackFactory, tmp_path: Path) -> None:
    """`--after-policy cancel`: a failed input cancels the held batch. A batch already
    queued without --after cannot be held afterwards: refused, one line."""
    live = stack(max_tries=1)
    live.worker("metal", 2)
    live.conductor()
    scan = write_manifest(tmp_path / "scan.jsonl", [{"task": "image.broken", "args": []}])
    repair = _sleepers(tmp_path / "repair.jsonl", 2, 0.01)
    assert live.command("dispatch", str(scan), "--backlog", "a").returncode == 0
    held = live.command(
        "dispatch", str(repair), "--backlog", "a", "--after", "scan", "--after-policy", "cancel"
    )
    assert held.returncode == 0, held.stderr
    live.wait_for(lambda: len(live.receipts("repair")) == 2, "repair's receipts")
    receipts = live.receipts("repair")
    assert sorted(r["status"] for r in receipts) == ["cancelled", "cancelled"]
    other = _sleepers(tmp_path / "other.jsonl", 1, 0.01)
    assert live.command("dispatch", str(other), "--backlog", "a").returncode == 0
    late = live.command("dispatch", str(other), "--backlog", "a", "--after", "scan")
    assert late.returncode == 2
    assert "was dispatched already, not held" in late.stderr
