"""`orchestrator bible init|scan`: create a story bible (`bible.db`), count its gaps.

gap_fill's own subcommands: `WORKFLOW` in plan.py passes `register` as its
`register_commands`, and `orchestrator` adds them beside its core commands.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from orchestrator.commands.common import add_common_options
from orchestrator.errors import EXIT_OK
from orchestrator.settings import Settings
from workflows.gap_fill.bible import DEFAULT_DATABASE, count_gaps, init_database, snapshot


def register(commands: Any) -> None:
    bible = commands.add_parser(
        "bible",
        help="create a story bible (bible.db) or count its gaps",
        description=(
            "The story bible: a SQLite graph of a film's world (nodes and edges) that the "
            "gap_fill workflow repairs. The schema is documented in workflows/gap_fill/bible.py."
        ),
    )
    actions = bible.add_subparsers(title="actions", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create the schema (idempotent), with --sample a small world with known gaps",
        description=(
            "Create the bible's tables and indexes in DATABASE (adding what is missing to "
            "an existing one). --sample fills an empty bible with a sample world of about "
            "240 nodes and 750 edges with gaps of every kind, the same every time."
        ),
    )
    init.add_argument("--sample", action="store_true", help="fill it with the sample world")
    scan = actions.add_parser(
        "scan",
        help="count the gaps gap_fill would plan jobs for",
        description="Count missing nodes, orphans and duplicate edges, in one snapshot.",
    )
    scan.add_argument("--json", action="store_true", help="print one JSON object")
    for parser, command in ((init, _init), (scan, _scan)):
        parser.add_argument(
            "--database",
            "--path",
            type=Path,
            default=DEFAULT_DATABASE,
            help=f"the bible's SQLite file (default: {DEFAULT_DATABASE})",
        )
        add_common_options(parser)
        parser.set_defaults(command=command, uses_stack=False)


def _init(options: argparse.Namespace, settings: Settings) -> int:
    existed = options.database.exists()
    sample = init_database(options.database, sample=options.sample)
    if sample is not None:
        gaps = sample.gaps
        print(
            f"wrote the sample world to {options.database}: {sample.nodes} nodes, "
            f"{sample.edges} edges; gaps: {gaps.missing_nodes} missing nodes, "
            f"{gaps.orphans} orphans, {gaps.duplicate_groups} duplicate groups "
            f"({gaps.duplicate_edges} redundant edges)"
        )
    else:
        print(f"{options.database}: schema {'up to date' if existed else 'created'}")
    return EXIT_OK


def _scan(options: argparse.Namespace, settings: Settings) -> int:
    with snapshot(options.database) as db:
        nodes = db.execute("SELECT count(*) FROM nodes").fetchone()[0]
        edges = db.execute("SELECT count(*) FROM edges").fetchone()[0]
        gaps = count_gaps(db)
    if options.json:
        report = {"database": str(options.database), "nodes": nodes, "edges": edges}
        print(orjson.dumps(report | asdict(gaps)).decode())
        return EXIT_OK
    print(f"{options.database}: {nodes} nodes, {edges} edges, {gaps.total} gaps")
    print(f"  missing nodes     {gaps.missing_nodes:>8}")
    print(f"  orphans           {gaps.orphans:>8}")
    print(f"  duplicate groups  {gaps.duplicate_groups:>8}")
    print(f"  redundant edges   {gaps.duplicate_edges:>8}")
    return EXIT_OK
