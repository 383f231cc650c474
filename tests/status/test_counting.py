"""How `status` counts a batch from its receipt statuses and dead letters (no Redis: the
counter is fed replies shaped as `lua/snapshot.lua` returns them)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.status.batches import BatchCounter
from orchestrator.status.model import Batch


def count(
    receipts: dict[str, int],
    *,
    total: int = 10,
    letters: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    record: dict[str, str] | None = None,
    running: int = 0,
) -> Batch:
    """One whole read of batch `b`: `receipts` counts by status, `letters` the dead
    letters as (job id, its receipt's status)."""
    fields = {"total": str(total), "queued": str(total), "complete": "1", **(record or {})}
    reply: dict[str, Any] = {
        "id": "b",
        "score": "1.0",
        "record": [item for pair in fields.items() for item in pair],
        "receipts": sum(receipts.values()),
        "running": running,  # the batch's runs in progress (`Keys.running`)
        "cursor": "0",
        "counts": receipts,
    }
    scan = {"letters": [["b", job_id, status] for job_id, status in letters], "next": 0}
    (batch,) = BatchCounter().batches([reply], scan, frozenset())
    return batch


def test_cancelled_jobs_are_counted_apart_and_not_pending() -> None:
    batch = count({"succeeded": 4, "cancelled": 3, "retrying": 1}, running=2)
    assert (batch.done, batch.failed, batch.dead_lettered, batch.cancelled) == (4, 0, 0, 3)
    assert (batch.running, batch.retrying, batch.pending) == (2, 1, 3)
    assert (batch.settled, batch.state) == (False, "running")


@pytest.mark.parametrize(
    ("receipts", "letters", "state"),
    [
        ({"succeeded": 7, "cancelled": 3}, [], "cancelled"),
        ({"cancelled": 10}, [], "cancelled"),
        ({"succeeded": 6, "cancelled": 3, "failed": 1}, [], "failed"),  # failures win
        ({"succeeded": 6, "cancelled": 3, "failed": 1}, [("b:9", "failed")], "failed"),
        ({"succeeded": 10}, [], "succeeded"),
    ],
)
def test_a_batch_settled_with_cancelled_jobs_and_no_failures_is_cancelled(
    receipts: dict[str, int], letters: list[tuple[str, str]], state: str
) -> None:
    batch = count(receipts, letters=letters)
    assert (batch.settled, batch.state, batch.pending) == (True, state, 0)
    assert batch.done + batch.failed + batch.dead_lettered + batch.cancelled == 10


def test_a_dead_letter_counts_its_job_once_whatever_its_receipt_says() -> None:
    """A job lost while running (receipt `running`, and a dead letter): dead-lettered,
    neither running nor pending; one cancelled with a letter too: dead-lettered."""
    batch = count(
        {"succeeded": 7, "running": 1, "cancelled": 2},
        letters=[("b:8", "running"), ("b:9", "cancelled")],
    )
    assert (batch.dead_lettered, batch.running, batch.cancelled) == (2, 0, 1)
    assert (batch.settled, batch.state, batch.pending) == (True, "failed", 0)


def test_cancelled_at_is_read_from_the_batch_record() -> None:
    assert count({"cancelled": 10}, record={"cancelled_at": "1700000000.5"}).cancelled_at == (
        1700000000.5
    )
    assert count({"succeeded": 10}).cancelled_at is None
    assert count({}, record={"cancelled_at": "soon"}).cancelled_at is None
