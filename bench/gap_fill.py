"""Planning `gap_fill` over a generated million-edge bible: seconds and peak RSS.

    python bench/gap_fill.py                          # 100,000 and 1,000,000 edges
    python bench/gap_fill.py --edges 100000,2000000   # other sizes
    python bench/gap_fill.py --keep DIR               # keep the bibles (DIR/edges_N/)

Generates the bible inside SQLite itself (a recursive CTE; the edge indexes are built
after the load, as a bulk import would), then runs the real command,
`orchestrator plan gap_fill --mode all`, in a subprocess and reads its wall time and
peak RSS from wait4. Targets: under 10 s and 300 MB for a million edges, and memory
that stays flat as the bible grows (the scans stream; only the gaps are sorted).

The graph: one node per four edges, each edge between two pseudo-random nodes; then
one edge in 997 points at one of 500 missing nodes, 1,000 nodes have no edge, and one
edge in 1,000 is copied (a duplicate group).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import orjson

from workflows.gap_fill.bible import INDEXES, RELATIONS, create_schema

ORPHANS = 1_000
MISSING = 500


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--edges",
        type=_sizes,
        default=[100_000, 1_000_000],
        help="bible sizes in edges, comma-separated (default: 100000,1000000)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="build and keep the bibles here")
    options = parser.parse_args()
    print(f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}\n")
    print("| bible | file | generate | `plan gap_fill --mode all` | peak RSS | jobs |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in options.edges:
            work = (options.keep or Path(tmp)) / f"edges_{size}"
            work.mkdir(parents=True, exist_ok=True)
            database = work / "bible.db"
            database.unlink(missing_ok=True)
            started = time.perf_counter()
            nodes, edges = generate(database, size)
            built = time.perf_counter() - started
            seconds, peak_mb = plan_subprocess(database, work / "manifests")
            print(
                f"| {nodes:,} nodes, {edges:,} edges | {database.stat().st_size / 1e6:.0f} MB "
                f"| {built:.1f} s | {seconds:.1f} s | {peak_mb:.0f} MB "
                f"| {_count_jobs(work / 'manifests'):,} |"
            )


def generate(path: Path, edges: int) -> tuple[int, int]:
    """Write the bench bible; returns (nodes, edges)."""
    # A prime node count keeps i -> (i * a) mod n a permutation and spreads the triples.
    nodes = _next_prime(max(edges // 4, 11))
    copies = edges // 1000
    base = edges - copies
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # a throwaway file: no need to survive a crash
        db.execute("BEGIN")
        create_schema(db, indexes=False)
        db.execute("CREATE TEMP TABLE relation (k INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO relation VALUES (?, ?)", enumerate(RELATIONS))
        db.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1)
            INSERT INTO nodes (id, kind, name)
            SELECT printf('n%08d', i), CASE i % 4 WHEN 0 THEN 'character' WHEN 1 THEN 'place'
                   WHEN 2 THEN 'scene' ELSE 'object' END, 'Node ' || i
            FROM seq
            """,
            (nodes + ORPHANS,),  # the last ORPHANS ids are never referenced below
        )
        db.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1)
            INSERT INTO edges (source, relation, target)
            SELECT printf('n%08d', (i * 2654435761) % ?2), r.name,
                   CASE WHEN i % 997 = 0 THEN printf('missing-%05d', (i / 997) % ?3)
                        ELSE printf('n%08d', (i * 40503 + 12345) % ?2) END
            FROM seq JOIN relation AS r ON r.k = i % 8
            """,
            (base, nodes, MISSING),
        )
        db.execute(
            "INSERT INTO edges (source, relation, target, attributes) "
            "SELECT source, relation, target, attributes FROM edges "
            "WHERE id % ?1 = 0 ORDER BY id LIMIT ?2",
            (base // max(copies, 1), copies),
        )
        for statement in INDEXES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = db.execute("SELECT count(*) FROM edges").fetchone()[0]
    return nodes + ORPHANS, int(total)


def plan_subprocess(database: Path, manifests: Path) -> tuple[float, float]:
    """Run the real CLI and read its own peak RSS from wait4 (Linux reports KiB)."""
    command = [sys.executable, "-m", "orchestrator", "plan", "gap_fill", "--mode", "all"]
    command += ["--database", str(database), "--manifests-dir", str(manifests)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"orchestrator plan failed with exit {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def _count_jobs(directory: Path) -> int:
    count = 0
    for path in directory.glob("*.jsonl"):
        with path.open("rb") as file:
            count += sum(1 for line in file if orjson.loads(line))
    return count


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(size < 1000 for size in sizes):
        raise argparse.ArgumentTypeError("each size must be at least 1000 edges")
    return sizes


def _next_prime(n: int) -> int:
    while any(n % d == 0 for d in range(2, int(n**0.5) + 1)):
        n += 1
    return n


if __name__ == "__main__":
    main()
