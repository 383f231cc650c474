"""How `status` counts a batch's jobs: its receipts by status, joined with the dead letters.

A job is counted once, as `verify` counts it: a success wins; else a dead letter makes it
dead-lettered (a worker writes a failed receipt and a dead letter together; a conductor
refuses an invalid payload or unknown task with a dead letter and no receipt at all);
else a failed receipt makes it failed, a cancelled one cancelled; anything else queued
(running — in `Keys.running` —, with a `retrying` receipt, or none yet) is pending. A
batch settled with cancelled jobs and no failures is `cancelled`; failures win. So the
snapshot script hands back, besides receipt counts, each dead letter of a listed batch with its
job's receipt status, and the two are joined here.

Both reads are spread over calls under a budget, so that a huge batch or dead-letter
list never stalls Redis. Receipts: an HSCAN per batch, resumed by cursor, a batch
counted longest ago first. Dead letters: one pass over the list by position, a budget
of letters per call, the whole pass replacing the last when it reaches the end. A
letter is attributed by the batch its envelope or receipt names, else by a derived job
id (`<batch>:<line>`); a `lost` letter of a job with a given id (the reaper knows only
the id) is not attributed. A pass that overlaps a `dlq requeue` or `purge` may miss a
letter the removal moved past its position, until the next pass.

A batch that settled with every job succeeded is never read again; one that settled
with failures is, as `dlq requeue` may send its jobs round again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.status.model import Batch, BatchState


@dataclass(slots=True)
class _Tally:
    """One batch's receipt counts across calls: the scan in progress and the last whole one."""

    cursor: str = "0"
    partial: Counter[str] = field(default_factory=Counter)
    last: Counter[str] | None = None
    completed: int = -1  # the read that last finished a whole scan
    settled: bool = False  # settled with every job succeeded: never read again


class BatchCounter:
    """Carries receipt scans and the dead-letter pass from one snapshot to the next."""

    def __init__(self) -> None:
        self._tallies: dict[str, _Tally] = {}
        self._reads = 0
        self._dead_from = 0  # where the dead-letter pass in progress resumes; 0: a new one
        self._dead_partial: dict[str, dict[str, str]] = {}  # batch → job id → receipt status
        self._dead_last: dict[str, dict[str, str]] = {}
        self._dead_cycle: frozenset[str] = frozenset()  # batches listed when the pass began
        self._dead_counted: frozenset[str] = frozenset()  # … when the last whole pass began

    def request(self, keep: frozenset[str]) -> dict[str, Any]:
        """The snapshot script's arguments about batches; `keep`: batches not to rescan."""
        self._reads += 1
        tallies = self._tallies
        return {
            "cursors": {b: t.cursor for b, t in tallies.items() if t.cursor != "0"},
            "skip": [b for b, t in tallies.items() if t.settled or b in keep],
            "order": sorted(tallies, key=lambda b: tallies[b].completed),
            "dead_from": self._dead_from,
        }

    def restart_dead_pass(self) -> None:
        """Read the dead letters afresh: until a new pass is whole, no batch's count of
        them is exact (for a read that must be current, not merely the last whole)."""
        self._dead_from, self._dead_counted = 0, frozenset()

    def batches(
        self, replies: list[dict[str, Any]], scan: dict[str, Any], keep: frozenset[str]
    ) -> list[Batch]:
        self._take_dead(scan, [r["id"] for r in replies])
        self._tallies = {r["id"]: self._tallies.get(r["id"], _Tally()) for r in replies}
        return [self._batch(r, self._tallies[r["id"]], r["id"] in keep) for r in replies]

    def _take_dead(self, scan: dict[str, Any], listed: list[str]) -> None:
        if self._dead_from == 0:
            self._dead_cycle, self._dead_partial = frozenset(listed), {}
        letters = scan.get("letters")
        for batch, job_id, status in letters if isinstance(letters, list) else []:
            self._dead_partial.setdefault(batch, {})[job_id] = status
        self._dead_from = int(scan["next"])
        if self._dead_from == 0:
            self._dead_last, self._dead_counted = self._dead_partial, self._dead_cycle
            self._dead_partial = {}

    def _batch(self, raw: dict[str, Any], tally: _Tally, kept: bool) -> Batch:
        record = hash_pairs(raw["record"])
        exact = tally.settled or kept
        if "cursor" in raw:  # the script scanned (some of) its receipts this call
            tally.partial.update(raw["counts"])
            tally.cursor = raw["cursor"]
            if tally.cursor == "0":
                tally.last, tally.partial, exact = tally.partial, Counter(), True
                tally.completed = self._reads
        counts = tally.last if tally.last is not None else tally.partial
        if raw["id"] in self._dead_counted:
            letters = Counter(self._dead_last.get(raw["id"], {}).values())
        else:  # listed since the last whole pass began: its letters are not all read yet
            letters = Counter(self._dead_partial.get(raw["id"], {}).values())
            exact = exact and tally.settled
        total, queued = as_int(record.get("total")), as_int(record.get("queued"))
        done = counts["succeeded"]
        dead = letters.total() - letters["succeeded"] + max(0, counts["dead"] - letters["dead"])
        failed = max(0, counts["failed"] - letters["failed"])
        cancelled = max(0, counts["cancelled"] - letters["cancelled"])
        dispatched = record.get("complete") == "1"
        settled = dispatched and exact and done + failed + dead + cancelled >= total
        state: BatchState = "running"
        if settled:
            state = "failed" if failed + dead else "cancelled" if cancelled else "succeeded"
        tally.settled = tally.settled or state == "succeeded"
        return Batch(
            id=raw["id"],
            backlog=record.get("backlog", ""),
            manifest=record.get("manifest", ""),
            created_at=float(record.get("created_at") or raw["score"]),
            total=total,
            queued=queued,
            dispatched=dispatched,
            receipts=raw["receipts"],
            done=done,
            failed=failed,
            dead_lettered=dead,
            cancelled=cancelled,
            retrying=max(0, counts["retrying"] - letters["retrying"]),
            running=int(raw.get("running") or 0),  # runs in progress (`Keys.running`)
            pending=max(0, queued - done - failed - dead - cancelled),
            settled=settled,
            state=state,
            cancelled_at=as_time(record.get("cancelled_at")),
            counts_exact=exact,
            expires_at=as_time(record.get("expires_at")),  # "never": None
            kept_forever=record.get("expires_at") == "never",
        )


def hash_pairs(flat: Any) -> dict[str, str]:
    """An HGETALL reply (field, value, field, value…) as a dict; cjson encodes an empty
    one as `{}`."""
    items = flat if isinstance(flat, list) else []
    return dict(zip(items[::2], items[1::2], strict=True))


def as_int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def as_time(value: str | None) -> float | None:
    """A unix time a hash field holds, or None when it holds none (or no number)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None
