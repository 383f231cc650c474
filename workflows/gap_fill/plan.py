"""gap_fill: scan a story bible (`bible.db`) for gaps and plan one repair job per gap.

orchestrator bible init --sample                       # a sample bible, data/bible.db
orchestrator plan gap_fill --mode all --database data/bible.db
python workflows/gap_fill/plan.py --mode orphans --limit 100

The gaps (defined in `bible.py`, beside this file) and the jobs that repair them:

- missing node (edges name an id that no node has): `bible.create_missing_node` writes
  a stub, its kind and name inferred from its edges, flagged for review;
- orphan (a node without any edge): `bible.flag_orphan` flags it for review, since
  nothing says what it should be linked to;
- duplicate (identical edges): `bible.drop_duplicate_edges` keeps the lowest id.

Every job carries the database path made absolute (a relative `--database` is taken
from the planner's working directory, so a worker started anywhere else finds the same
file) and a `gap_id`, `<plan id>:<kind>:<key>`, that its repair records in the audit
table: running a job twice changes nothing more. All the scans of one plan read one
snapshot of the database, even while workers write to it. A bible without gaps (of the
kinds asked) plans nothing and writes no manifest: there is nothing to repair.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from sqlite3 import Connection

from orchestrator.job import JobSpec, spec
from orchestrator.workflow import NothingToPlan, Workflow, positive_int
from workflows.gap_fill import bible, commands

DEFAULT_MAX_EDGES = 20  # edges a missing-node job carries: enough evidence, small lines

# One kind of gap: (snapshot, options, plan id, database path) -> its repair jobs.
Jobs = Generator[JobSpec, None, None]
Scan = Callable[[Connection, argparse.Namespace, str, str], Jobs]


def all_gaps(options: argparse.Namespace) -> Iterator[JobSpec]:
    """every gap: missing nodes, then orphans, then duplicate edges"""
    return _plan(options, "gaps", _missing_nodes, _orphans, _duplicates)


def missing_nodes(options: argparse.Namespace) -> Iterator[JobSpec]:
    """one job per node that edges name but that does not exist"""
    return _plan(options, "missing nodes", _missing_nodes)


def orphans(options: argparse.Namespace) -> Iterator[JobSpec]:
    """one job per node without edges, to flag it for review"""
    return _plan(options, "orphans", _orphans)


def duplicates(options: argparse.Namespace) -> Iterator[JobSpec]:
    """one job per group of identical edges, to keep one of them"""
    return _plan(options, "duplicate edges", _duplicates)


def _plan(options: argparse.Namespace, gaps: str, *kinds: Scan) -> Iterator[JobSpec]:
    plan_id = options.plan_id or _new_plan_id()
    # Absolute, as the least surprising reading of a relative path: where the user was.
    database = os.path.abspath(options.database)
    planned = 0
    with bible.snapshot(Path(options.database)) as db:
        for kind in kinds:
            # Closed here, before the snapshot: a scan cut short by --limit (or by a bad
            # line) must let go of its cursor while the connection is still open.
            with closing(kind(db, options, plan_id, database)) as jobs:
                for job in jobs:
                    if planned == options.limit:
                        return
                    planned += 1
                    yield job
    if planned == 0:
        raise NothingToPlan(
            f"nothing to repair: {options.database} has no {gaps}; no manifest written"
        )


def _missing_nodes(
    db: Connection, options: argparse.Namespace, plan_id: str, database: str
) -> Jobs:
    for node in bible.missing_nodes(db, options.max_edges):
        extra = {"names": node.names[:5]} if node.names else {}
        yield spec(
            "bible.create_missing_node",
            node.node_id,
            edges=[list(edge) for edge in node.edges],
            edge_count=node.edge_count,
            gap_id=f"{plan_id}:missing_node:{node.node_id}",
            database=database,
            meta={"gap": "missing_node"},
            **extra,
        )


def _orphans(db: Connection, options: argparse.Namespace, plan_id: str, database: str) -> Jobs:
    for orphan in bible.orphans(db):
        yield spec(
            "bible.flag_orphan",
            orphan.node_id,
            gap_id=f"{plan_id}:orphan:{orphan.node_id}",
            database=database,
            meta={"gap": "orphan"},
        )


def _duplicates(db: Connection, options: argparse.Namespace, plan_id: str, database: str) -> Jobs:
    for group in bible.duplicates(db):
        yield spec(
            "bible.drop_duplicate_edges",
            group.keep,
            source=group.source,
            relation=group.relation,
            target=group.target,
            copies=group.copies,
            gap_id=f"{plan_id}:duplicate:{group.keep}",
            database=database,
            meta={"gap": "duplicate"},
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        type=Path,
        default=bible.DEFAULT_DATABASE,
        help=f"the bible to scan (default: {bible.DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="plan at most this many jobs (default: all)",
    )
    parser.add_argument(
        "--max-edges",
        type=positive_int,
        default=DEFAULT_MAX_EDGES,
        help=f"edges a missing-node job carries as evidence (default: {DEFAULT_MAX_EDGES})",
    )
    parser.add_argument(
        "--plan-id",
        type=_plan_id,
        default=None,
        help="prefix of the jobs' gap ids (default: a fresh UTC time and random suffix)",
    )


def _new_plan_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _plan_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise argparse.ArgumentTypeError("use 1-64 letters, digits, '_', '.' or '-'")
    return text


WORKFLOW = Workflow(
    name="gap_fill",
    summary="Repair a story bible: stub missing nodes, flag orphans, drop duplicate edges.",
    modes={
        "all": all_gaps,
        "missing_nodes": missing_nodes,
        "orphans": orphans,
        "duplicates": duplicates,
    },
    add_arguments=add_arguments,
    register_commands=commands.register,  # orchestrator bible init|scan
)

if __name__ == "__main__":
    raise SystemExit(WORKFLOW.main())
