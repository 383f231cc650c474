"""A job that kills every worker that runs it is run at most max_tries times, then
dead-lettered as interrupted; the rest of its batch is not held up by it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import StackFactory
from tests.live_stack import write_manifest

pytestmark = pytest.mark.chaos


def test_poison_pill_is_dead_lettered_after_max_tries(stack: StackFactory, tmp_path: Path) -> None:
    run = stack(max_tries=3)
    workers = [run.worker("metal", 2)]
    run.worker("cloud", 2)
    run.conductor()
    lines: list[dict[str, object]] = [
        {"task": "image.crash", "args": [], "meta": {"pool": "metal"}}
    ]
    lines += [{"task": "system.sleep", "args": [0.2]} for _ in range(10)]
    run.dispatch(write_manifest(tmp_path / "poison_01.jsonl", lines))

    def settled() -> bool:
        if workers[-1].poll() is not None:  # it took the pill: a supervisor starts another
            workers.append(run.start("worker", "--pool", "metal", "--concurrency", "2"))
        return run.redis.llen(run.keys.dead) == 1

    run.wait_for(settled, "the pill dead-lettered", timeout=60, deaths_expected=True)
    (dead,) = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    assert (dead["job_id"], dead["reason"]) == ("poison_01:1", "interrupted")
    assert sum(w.poll() == 1 for w in workers) == 3  # three runs, three dead workers
    run.wait_for(
        lambda: len(run.receipts("poison_01")) == 11, "the batch", 60, deaths_expected=True
    )
    receipts = {r["job_id"]: r for r in run.receipts("poison_01")}
    assert receipts["poison_01:1"]["status"] == "failed"
    assert all(receipts[f"poison_01:{n}"]["status"] == "succeeded" for n in range(2, 12))
