"""Repairs of a story bible (`bible.db`): one task per kind of gap `gap_fill` plans.

Each repair is one write transaction that also writes its audit row, keyed by the
job's `gap_id` (unique with the action): a job that already ran finds its row and
changes nothing more, and a repair and its audit row commit together or not at all.
The repairs are idempotent on their own too (`ON CONFLICT DO NOTHING`, deletes that
find nothing left), so two plans of the same gap cannot repair it twice either.

SQLite runs in a worker thread, so the event loop never blocks. Several workers write
at once: WAL lets readers run beside the one writer, `BEGIN IMMEDIATE` takes the write
lock up front (no read-to-write upgrade that could deadlock), the busy timeout waits
out other writers, and a bounded retry covers a "database is locked" that gets through.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.registry import task
from workflows.gap_fill.bible import RELATIONS, open_bible

LOCKED_ATTEMPTS = 5  # transactions tried before a "database is locked" fails the job
UNKNOWN_KIND = "unknown"
DROPPED_SHOWN = 50  # edge ids a drop lists in its audit row and receipt (kept under 1 KB)
log = structlog.get_logger("workers.tasks.bible")
# A repair: (connection, gap id, time) -> (rows changed, detail for the audit and receipt).
Change = Callable[[sqlite3.Connection, str, str], tuple[int, dict[str, Any]]]


@task
async def create_missing_node(
    node_id: str,
    *,
    edges: list[list[Any]],
    gap_id: str,
    database: str,
    edge_count: int | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Create a stub for a node that edges name but nobody wrote, flagged for review.

    Its kind is the one every known relation of `edges` agrees on (else "unknown"), its
    name the one the edges give most (else made from its id).
    """
    kind, name, votes = infer_stub(node_id, edges, names or [])
    evidence = {
        "edges": [edge[0] for edge in edges],
        "edge_count": edge_count or len(edges),
        "kind_votes": dict(votes),
        "name_from": "edges" if names else "id",
    }
    change = partial(_create_node, node_id, kind, name, evidence)
    return await _repair(database, gap_id, "create_node", node_id, change)


@task
async def flag_orphan(node_id: str, *, gap_id: str, database: str) -> dict[str, Any]:
    """Flag a node without edges for review (unless it has gained edges since the scan)."""
    change = partial(_flag_orphan, node_id)
    return await _repair(database, gap_id, "flag_orphan", node_id, change)


@task
async def drop_duplicate_edges(
    keep: int,
    *,
    source: str,
    relation: str,
    target: str,
    gap_id: str,
    database: str,
    copies: int | None = None,
) -> dict[str, Any]:
    """Delete every edge identical to edge `keep` (triple and attributes), keeping it."""
    change = partial(_drop_duplicates, keep, (source, relation, target))
    return await _repair(database, gap_id, "drop_duplicates", str(keep), change)


def infer_stub(
    node_id: str, edges: Sequence[Sequence[Any]], names: Sequence[str]
) -> tuple[str, str, Counter[str]]:
    """(kind, name, kind votes) of a missing node, from the edges that name it."""
    votes: Counter[str] = Counter()
    for _, source, relation, target in edges:
        ends = RELATIONS.get(relation)
        if ends is None:
            continue  # a relation of no known kind says nothing
        if source == node_id:
            votes[ends[0]] += 1
        if target == node_id:
            votes[ends[1]] += 1
    kind = next(iter(votes)) if len(votes) == 1 else UNKNOWN_KIND
    name = names[0] if names else node_id.replace("-", " ").replace("_", " ").title()
    return kind, name, votes


async def _repair(
    database: str, gap_id: str, action: str, subject: str, change: Change
) -> dict[str, Any]:
    run = partial(_in_transaction, Path(database), gap_id, action, subject, change)
    return await anyio.to_thread.run_sync(run)


def _in_transaction(
    path: Path, gap_id: str, action: str, subject: str, change: Change
) -> dict[str, Any]:
    """Run `change` and its audit row in one write transaction, once per (gap, action)."""
    for attempt in range(1, LOCKED_ATTEMPTS + 1):
        try:
            with closing(open_bible(path, write=True)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = _once(db, gap_id, action, subject, change)
                except BaseException:
                    if db.in_transaction:  # some errors end the transaction themselves
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
        except sqlite3.OperationalError as exc:
            contended = "locked" in str(exc) or "busy" in str(exc)
            if not contended or attempt == LOCKED_ATTEMPTS:
                raise
            log.warning("bible_locked", gap_id=gap_id, attempt=attempt, error=str(exc))
            time.sleep(random.uniform(0.05, 0.2) * attempt)  # in a worker thread, not the loop
    raise AssertionError("unreachable")  # pragma: no cover


def _once(
    db: sqlite3.Connection, gap_id: str, action: str, subject: str, change: Change
) -> dict[str, Any]:
    summary: dict[str, Any] = {"gap_id": gap_id, "action": action, "subject": subject}
    done = db.execute(
        "SELECT changed, detail FROM repairs WHERE gap_id = ? AND action = ?", (gap_id, action)
    ).fetchone()
    if done is not None:  # this job ran before: report what it did then
        return {**summary, "changed": done[0], "already_done": True, **json.loads(done[1])}
    now = _now()
    changed, detail = change(db, gap_id, now)
    db.execute(
        "INSERT INTO repairs (gap_id, action, subject, changed, detail, at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (gap_id, action, subject, changed, _json(detail), now),
    )
    return {**summary, "changed": changed, "already_done": False, **detail}


def _create_node(
    node_id: str,
    kind: str,
    name: str,
    evidence: dict[str, Any],
    db: sqlite3.Connection,
    gap_id: str,
    now: str,
) -> tuple[int, dict[str, Any]]:
    attributes = _json({"needs_review": True, "stub": True})
    created = db.execute(
        "INSERT INTO nodes (id, kind, name, attributes) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        (node_id, kind, name, attributes),
    ).rowcount
    if not created:
        return 0, {"skipped": "the node exists"}
    db.execute(
        "INSERT INTO flags (node_id, reason, gap_id, detail, at) VALUES (?, 'stub', ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (node_id, gap_id, _json(evidence), now),
    )
    return 1, {"kind": kind, "name": name}


def _flag_orphan(
    node_id: str, db: sqlite3.Connection, gap_id: str, now: str
) -> tuple[int, dict[str, Any]]:
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM nodes WHERE id = ?1), "
        "EXISTS (SELECT 1 FROM edges WHERE source = ?1) "
        "OR EXISTS (SELECT 1 FROM edges WHERE target = ?1)",
        (node_id,),
    ).fetchone()
    if not row[0]:
        return 0, {"skipped": "the node is gone"}
    if row[1]:
        return 0, {"skipped": "the node has edges now"}
    flagged = db.execute(
        "INSERT INTO flags (node_id, reason, gap_id, detail, at) "
        "VALUES (?, 'orphan', ?, '{}', ?) ON CONFLICT DO NOTHING",
        (node_id, gap_id, now),
    ).rowcount
    return flagged, {}


def _drop_duplicates(
    keep: int, triple: tuple[str, str, str], db: sqlite3.Connection, gap_id: str, now: str
) -> tuple[int, dict[str, Any]]:
    kept = db.execute(
        "SELECT source, relation, target, attributes FROM edges WHERE id = ?", (keep,)
    ).fetchone()
    if kept is None or tuple(kept[:3]) != triple:
        return 0, {"skipped": "the kept edge is gone or changed"}
    same = "source = ? AND relation = ? AND target = ? AND attributes = ? AND id != ?"
    dropped = [
        row[0]
        for row in db.execute(f"SELECT id FROM edges WHERE {same} ORDER BY id", (*kept, keep))
    ]
    db.execute(f"DELETE FROM edges WHERE {same}", (*kept, keep))
    return len(dropped), {"kept": keep, "dropped": dropped[:DROPPED_SHOWN]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
