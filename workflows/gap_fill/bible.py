"""The story bible: a film world's knowledge graph in SQLite, and the scans for its gaps.

(One module over 300 lines: the schema, the sample world and the scans are one SQL
vocabulary, read together when a gap's definition changes.)

`bible.db` holds what the writers know about a film's world as nodes (characters,
places, scenes, objects) and the relations between them as edges:

    nodes    id TEXT PRIMARY KEY, kind, name, attributes (a JSON object)
    edges    id INTEGER PRIMARY KEY, source, relation, target, attributes (JSON)
             indexed on (source), (target) and (source, relation, target)
    flags    (node_id, reason) PRIMARY KEY, gap_id, detail, at: the review queue
    repairs  (gap_id, action) UNIQUE, subject, changed, detail, at: the audit of repairs

Edges name their ends by id, without a foreign key: an edge can outlive its node, and
finding such edges is the point. The gaps, each repaired by one job of `gap_fill`:

- missing node: an id that edges reference (as source or target) but no node has;
- orphan: a node with no edge at all that is not flagged for review yet;
- duplicate: edges with the same source, relation, target *and* attributes (the same
  triple with other attributes says something else and is left alone).

Each scan is one SQL statement over the indexes (anti-joins, GROUP BY ... HAVING), read
in chunks, so a million-edge bible plans in seconds with flat memory.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

SCHEMA_VERSION = 1
DEFAULT_DATABASE = Path("data/bible.db")
TABLES = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edges (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, relation TEXT NOT NULL,
    target TEXT NOT NULL, attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS flags (
    node_id TEXT NOT NULL, reason TEXT NOT NULL, gap_id TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}', at TEXT NOT NULL,
    PRIMARY KEY (node_id, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY, gap_id TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, changed INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '{}',
    at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS repairs_gap_action ON repairs (gap_id, action);
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS edges_source ON edges (source);
CREATE INDEX IF NOT EXISTS edges_target ON edges (target);
CREATE INDEX IF NOT EXISTS edges_triple ON edges (source, relation, target);
"""

# relation -> (kind of its source, kind of its target): what a stub's kind is inferred from.
RELATIONS: dict[str, tuple[str, str]] = {
    "appears_in": ("character", "scene"),
    "knows": ("character", "character"),
    "lives_in": ("character", "place"),
    "owns": ("character", "object"),
    "set_in": ("scene", "place"),
    "follows": ("scene", "scene"),
    "features": ("scene", "object"),
    "part_of": ("place", "place"),
}

# Each missing id with the edges that reference it, in (id, edge id) order: distinct
# ends first (a covering scan of each index), probed against nodes, then joined back.
_MISSING_NODE_EDGES = """
WITH missing_sources AS (
    SELECT s.source AS node_id FROM (SELECT DISTINCT source FROM edges) AS s
    LEFT JOIN nodes AS n ON n.id = s.source WHERE n.id IS NULL
), missing_targets AS (
    SELECT t.target AS node_id FROM (SELECT DISTINCT target FROM edges) AS t
    LEFT JOIN nodes AS n ON n.id = t.target WHERE n.id IS NULL
)
SELECT m.node_id, e.id, e.source, e.relation, e.target, {source_name}
FROM missing_sources AS m JOIN edges AS e ON e.source = m.node_id
UNION ALL
SELECT m.node_id, e.id, e.source, e.relation, e.target, {target_name}
FROM missing_targets AS m JOIN edges AS e ON e.target = m.node_id
ORDER BY 1, 2
""".format(  # the writers' name for the missing end, when an edge carries one
    **{
        key: f"CASE WHEN json_valid(e.attributes) THEN json_extract(e.attributes, '$.{key}') END"
        for key in ("source_name", "target_name")
    }
)
_ORPHANS = """
SELECT n.id, n.kind, n.name FROM nodes AS n
WHERE NOT EXISTS (SELECT 1 FROM edges AS e WHERE e.source = n.id)
  AND NOT EXISTS (SELECT 1 FROM edges AS e WHERE e.target = n.id)
  AND NOT EXISTS (SELECT 1 FROM flags AS f WHERE f.node_id = n.id AND f.reason = 'orphan')
ORDER BY n.id
"""
# Triples seen twice (a covering scan of edges_triple, no sort), then, within those few,
# the copies whose attributes agree too; a group's lowest id is the edge a repair keeps.
_DUPLICATES = """
WITH repeated AS (
    SELECT source, relation, target FROM edges
    GROUP BY source, relation, target HAVING count(*) > 1
)
SELECT min(e.id), e.source, e.relation, e.target, count(*) - 1
FROM repeated AS r
JOIN edges AS e ON e.source = r.source AND e.relation = r.relation AND e.target = r.target
GROUP BY e.source, e.relation, e.target, e.attributes HAVING count(*) > 1
ORDER BY 1
"""
_CHUNK = 1000


@dataclass(frozen=True)
class MissingNode:
    node_id: str
    edges: list[tuple[int, str, str, str]]  # (id, source, relation, target), capped
    edge_count: int  # every edge that references it
    names: list[str]  # the names its edges give it, most used first


@dataclass(frozen=True)
class Orphan:
    node_id: str
    kind: str
    name: str


@dataclass(frozen=True)
class DuplicateGroup:
    keep: int  # the group's lowest edge id: the copy a repair keeps
    source: str
    relation: str
    target: str
    copies: int  # the redundant edges a repair drops


@dataclass(frozen=True)
class GapCounts:
    missing_nodes: int = 0
    orphans: int = 0
    duplicate_groups: int = 0
    duplicate_edges: int = 0  # redundant copies, over all groups

    @property
    def total(self) -> int:
        """Gaps, that is jobs: one per missing node, orphan and duplicate group."""
        return self.missing_nodes + self.orphans + self.duplicate_groups


def open_bible(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """An existing bible, read-only unless `write`: a typo never creates an empty file.

    The connection is in autocommit mode; callers open their own transactions (`BEGIN`
    for one snapshot across several scans, `BEGIN IMMEDIATE` to write).
    """
    if not path.is_file():
        raise UserError(f"no bible database at {path} (create one: orchestrator bible init)")
    uri = f"{path.resolve().as_uri()}?mode={'rw' if write else 'ro'}"
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.OperationalError:  # "database is locked" and the like: worth a retry
        db.close()
        raise
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        db.close()
        raise UserError(f"{path} is not a bible database: {exc}") from None
    if not {"nodes", "edges", "flags", "repairs"} <= tables:
        db.close()
        raise UserError(f"{path} is not a bible database (run: orchestrator bible init)")
    return db


@contextmanager
def snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction: scans agree with each other
    even while workers write (WAL readers see the database as of their first read)."""
    with closing(open_bible(path)) as db:
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("ROLLBACK")


def init_database(path: Path, *, sample: bool = False) -> Sample | None:
    """Create the schema in `path` (idempotent); with `sample`, fill an empty one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")  # a property of the file: every writer gets it
        db.execute("BEGIN IMMEDIATE")
        try:
            create_schema(db)
            if sample and db.execute("SELECT EXISTS (SELECT 1 FROM edges)").fetchone()[0]:
                raise UserError(f"{path} already holds a graph; the sample needs an empty one")
            written = write_sample(db) if sample else None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return written


def create_schema(db: sqlite3.Connection, *, indexes: bool = True) -> None:
    """The tables, and the edge indexes unless a bulk load adds them afterwards."""
    for statement in (TABLES + (INDEXES if indexes else "")).split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def missing_nodes(db: sqlite3.Connection, max_edges: int) -> Iterator[MissingNode]:
    """Every missing node, with the first `max_edges` (by id) of the edges naming it."""
    for node_id, rows in groupby(_stream(db, _MISSING_NODE_EDGES), key=lambda row: row[0]):
        edges: list[tuple[int, str, str, str]] = []
        names: Counter[str] = Counter()
        count, last = 0, None
        for _, edge_id, source, relation, target, name in rows:
            if edge_id != last:  # a self-loop comes back once per end, side by side
                count, last = count + 1, edge_id
                if len(edges) < max_edges:
                    edges.append((edge_id, source, relation, target))
            if isinstance(name, str) and name.strip():
                names[name.strip()] += 1
        ranked = sorted(names, key=lambda name: (-names[name], name))
        yield MissingNode(node_id, edges, count, ranked)


def orphans(db: sqlite3.Connection) -> Iterator[Orphan]:
    for node_id, kind, name in _stream(db, _ORPHANS):
        yield Orphan(node_id, kind, name)


def duplicates(db: sqlite3.Connection) -> Iterator[DuplicateGroup]:
    for keep, source, relation, target, copies in _stream(db, _DUPLICATES):
        yield DuplicateGroup(keep, source, relation, target, copies)


def count_gaps(db: sqlite3.Connection) -> GapCounts:
    missing = sum(1 for _ in missing_nodes(db, max_edges=0))
    lonely = sum(1 for _ in orphans(db))
    groups = copies = 0
    for group in duplicates(db):
        groups, copies = groups + 1, copies + group.copies
    return GapCounts(missing, lonely, groups, copies)


def _stream(db: sqlite3.Connection, sql: str) -> Iterator[Any]:
    with closing(db.execute(sql)) as cursor:
        while rows := cursor.fetchmany(_CHUNK):
            yield from rows


# The sample: a small film world with known gaps of every kind, the same for every run.

SAMPLE_SEED = 1895  # the year of the first public film screening
_FIRST = "Ana Bruno Carla Dario Elena Felix Greta Hugo Ines Jonas Kira Luca Marta Nico Olga Pablo"
_LAST = "Vidal Moreau Keller Novak Ruiz Lind"
_PLACE_A, _PLACE_B = (
    "Old North Salt Iron Upper Quiet",
    "Mill Pier Chapel Market Station Garden Tower",
)
_OBJECTS = (
    "Brass Key", "Red Ledger", "Pocket Watch", "Film Reel", "Silver Ring", "Train Ticket",
    "Old Camera", "Blue Scarf", "Torn Map", "Letter Opener", "Music Box", "Oil Lamp",
    "Wooden Boat", "Glass Eye", "Iron Box", "Paper Crane", "Green Bottle", "Church Bell",
    "Gold Coin", "Rope Ladder", "Cracked Mirror", "Bone Whistle", "Lost Locket",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """What `write_sample` wrote: the gaps a scan must find, exactly these."""

    nodes: int
    edges: int
    missing_nodes: frozenset[str]
    orphans: frozenset[str]
    duplicate_groups: int
    duplicate_edges: int

    @property
    def gaps(self) -> GapCounts:
        return GapCounts(
            len(self.missing_nodes), len(self.orphans), self.duplicate_groups, self.duplicate_edges
        )


def write_sample(db: sqlite3.Connection, seed: int = SAMPLE_SEED) -> Sample:
    """About 240 nodes and 750 edges of a connected world, with gaps of every kind:
    14 missing nodes (one named by 25 edges, some named by kinds that disagree or by no
    known relation, two at both ends of one edge), 12 orphans, and 10 duplicate groups
    (13 redundant copies, one group of dangling edges), plus a same-triple edge with
    other attributes that is no duplicate."""
    rng = random.Random(seed)
    people = [f"{a} {b}" for a in _FIRST.split() for b in _LAST.split()]
    places = [f"{a} {b}" for a in _PLACE_A.split() for b in _PLACE_B.split()]
    rng.shuffle(people)
    rng.shuffle(places)
    world = {
        "character": people[:60], "place": places[:30], "object": list(_OBJECTS[:20]),
        "scene": [f"Scene {n}" for n in range(1, 121)],
    }  # fmt: skip
    ids = {kind: [_slug(name) for name in names] for kind, names in world.items()}
    cast, sets, props, scenes = ids["character"], ids["place"], ids["object"], ids["scene"]
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i, scene in enumerate(scenes):
        edges[scene, "set_in", sets[i] if i < len(sets) else rng.choice(sets)] = {}
        if i:
            edges[scene, "follows", scenes[i - 1]] = {}
        for person in rng.sample(cast, 2):
            edges[person, "appears_in", scene] = {}
    for j, person in enumerate(cast):
        edges[person, "appears_in", scenes[2 * j]] = {}
        edges[person, "lives_in", rng.choice(sets)] = {}
    for thing in props:
        edges[rng.choice(cast), "owns", thing] = {}
        edges[rng.choice(scenes), "features", thing] = {}
    for _ in range(40):
        a, b = rng.sample(cast, 2)
        edges[a, "knows", b] = {"since": rng.randint(1990, 2020)}
    for _ in range(10):
        a, b = rng.sample(sets, 2)
        edges[a, "part_of", b] = {}
    nodes = [
        (node, kind, name, _node_attributes(kind, name, rng))
        for kind, names in world.items()
        for node, name in zip(ids[kind], names, strict=True)
    ]
    lonely = [(name, "character") for name in people[60:64]]
    lonely += [(name, "place") for name in places[30:34]]
    lonely += [(name, "object") for name in _OBJECTS[20:22]]
    lonely += [("Scene 121", "scene"), ("Scene 122", "scene")]
    nodes += [(_slug(name), kind, name, _node_attributes(kind, name, rng)) for name, kind in lonely]

    dangling: list[tuple[str, str, str, dict[str, Any]]] = []
    for k, name in enumerate(people[64:68]):  # cast members whose nodes were deleted
        for m, scene in enumerate(rng.sample(scenes, 1 + k % 3)):
            hint = {"source_name": name} if k < 2 and m == 0 else {}
            dangling.append((_slug(name), "appears_in", scene, hint))
    for m, scene in enumerate(rng.sample(scenes, 25)):  # named by more edges than a job carries
        hint = {"source_name": "The Stranger"} if m == 0 else {}
        dangling.append(("the-stranger", "appears_in", scene, hint))
    for k, name in enumerate(places[34:37]):  # homes never written up
        for person in rng.sample(cast, 1 + k % 2):
            hint = {"target_name": name} if k == 0 else {}
            dangling.append((person, "lives_in", _slug(name), hint))
    for scene in ("scene-130", "scene-131"):  # cut scenes, still in the chain and in casts
        dangling.append((rng.choice(cast), "appears_in", scene, {}))
        dangling.append((scene, "follows", rng.choice(scenes), {}))
    dangling += [
        (rng.choice(cast), "lives_in", "the-lighthouse", {}),  # kinds disagree: a place...
        (rng.choice(cast), "appears_in", "the-lighthouse", {}),  # ...and a scene
        (rng.choice(scenes), "mentions", "old-letter", {}),  # a relation of no known kind
        ("ghost-owner", "owns", _slug(_OBJECTS[22]), {}),  # both ends missing
    ]
    node_ids = {node for node, *_ in nodes}
    missing = {end for source, _, target, _ in dangling for end in (source, target)} - node_ids

    rows = [(s, r, t, _json(a)) for (s, r, t), a in edges.items()]
    rows += [(s, r, t, _json(a)) for s, r, t, a in dangling]
    # 10 duplicate groups: 6 edges copied once, 3 twice, and one dangling edge once.
    *twins, near = rng.sample(rows[: len(edges)], 10)
    copies = [*twins, *twins[:3], rows[len(edges)]]
    rows += copies
    rows.append((*near[:3], _json({"note": "flashback"})))  # same triple: no duplicate
    rng.shuffle(rows)
    db.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)", nodes)
    db.executemany(
        "INSERT INTO edges (source, relation, target, attributes) VALUES (?, ?, ?, ?)", rows
    )
    return Sample(
        nodes=len(nodes),
        edges=len(rows),
        missing_nodes=frozenset(missing),
        orphans=frozenset(_slug(name) for name, _ in lonely),
        duplicate_groups=len(twins) + 1,
        duplicate_edges=len(copies),
    )


def _node_attributes(kind: str, name: str, rng: random.Random) -> str:
    if kind == "character":
        return _json({"age": rng.randint(9, 80)})
    if kind == "scene":
        return _json({"number": int(name.split()[-1])})
    return _json({"interior": rng.random() < 0.4} if kind == "place" else {})


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
