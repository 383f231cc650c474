"""The spillover in words, as `status`, `status --json` and the dashboard banner say it
(no Redis: pools as the snapshot builds them)."""

from __future__ import annotations

import orjson

from orchestrator.status.model import Pool, document
from orchestrator.status.verdict import verdict


def pool(name: str, *, slots: int, running: int, in_flight: int, paused: bool = False) -> Pool:
    return Pool(
        name=name, order=0, queue=f"q:{name}", spill_after=0.0, max_in_flight=None,
        workers=[], slots=slots, running=running, capacity=slots, in_flight=in_flight,
        queued=max(0, in_flight - running), free=max(0, slots - in_flight), prefetch=0,
        finish_rate=0.0, waiting=0, oldest_heartbeat_age=None,
        paused_at=1.0 if paused else None, scaler=None,
    )  # fmt: skip


def test_a_paused_first_pool_is_called_paused_never_a_pool_with_room() -> None:
    """The banner once said "metal has room: no spillover" of a paused metal."""
    said = verdict(
        [pool("metal", slots=4, running=1, in_flight=1, paused=True),
         pool("cloud", slots=8, running=5, in_flight=5)]
    )  # fmt: skip
    assert (said.kind, said.text) == ("spillover", "spillover: metal paused, cloud runs 5")
    idle = verdict([pool("metal", slots=4, running=0, in_flight=0, paused=True),
                    pool("cloud", slots=8, running=0, in_flight=0)])  # fmt: skip
    assert idle.text == "metal paused, nothing running"


def test_later_pools_are_described_by_the_columns_running_and_queued() -> None:
    """`cloud runs 8` beside a running column of 6 once: the words use the columns."""
    said = verdict(
        [pool("metal", slots=2, running=2, in_flight=2),
         pool("cloud", slots=6, running=6, in_flight=8)]
    )  # fmt: skip
    assert said.text == "spillover: metal full, cloud runs 6, 2 queued"
    roomy = verdict(
        [
            pool("metal", slots=4, running=1, in_flight=1),
            pool("cloud", slots=4, running=2, in_flight=2),
        ]
    )
    assert (roomy.kind, roomy.text) == ("elsewhere", "metal has 3 free; cloud runs 2")
    busy = verdict(
        [
            pool("metal", slots=4, running=1, in_flight=1),
            pool("cloud", slots=4, running=0, in_flight=0),
        ]
    )
    assert (busy.kind, busy.text) == ("busy", "metal has 3 free: no spillover")


def test_the_json_document_carries_the_same_words() -> None:
    from orchestrator.status.model import ConductorSide, Snapshot

    pools = [
        pool("metal", slots=2, running=2, in_flight=2),
        pool("cloud", slots=4, running=3, in_flight=3),
    ]
    snapshot = Snapshot(
        schema=3, namespace="n", time=0.0, redis=None, backlogs=[],
        conductor=ConductorSide(
            live=[], processing=0, orphaned=0, ready=0, deferred=0, next_due_in=None
        ),
        no_worker={}, pools=pools, rate_limits=[], batches=[], batches_total=0, dead_letters=0,
    )  # fmt: skip
    said = orjson.loads(orjson.dumps(document(snapshot)))["spillover"]
    assert said == {"kind": "spillover", "text": "spillover: metal full, cloud runs 3"}
