"""The story bible: its sample world, the gap scans, and each repair on its own."""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UserError
from orchestrator.job import JobSpec
from orchestrator.registry import default_registry
from workers.tasks.bible import infer_stub
from workflows.gap_fill import bible
from workflows.gap_fill import plan as gap_fill


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, bible.Sample]:
    path = tmp_path / "bible.db"
    written = bible.init_database(path, sample=True)
    assert written is not None
    return path, written


def test_scan_of_the_sample_finds_exactly_the_planted_gaps(
    sample: tuple[Path, bible.Sample],
) -> None:
    path, planted = sample
    with bible.snapshot(path) as db:
        missing = {node.node_id for node in bible.missing_nodes(db, max_edges=20)}
        lonely = {orphan.node_id for orphan in bible.orphans(db)}
        counts = bible.count_gaps(db)
    assert missing == planted.missing_nodes
    assert lonely == planted.orphans
    assert counts == planted.gaps == bible.GapCounts(14, 12, 10, 13)
    assert 200 <= planted.nodes <= 400


def test_the_sample_is_the_same_every_time(tmp_path: Path) -> None:
    for name in ("one.db", "two.db"):
        bible.init_database(tmp_path / name, sample=True)
    assert dump(tmp_path / "one.db") == dump(tmp_path / "two.db")


def test_missing_node_carries_its_first_edges_up_to_the_cap_and_the_names_they_give(
    sample: tuple[Path, bible.Sample],
) -> None:
    with bible.snapshot(sample[0]) as db:
        found = {node.node_id: node for node in bible.missing_nodes(db, max_edges=5)}
    stranger = found["the-stranger"]
    assert (len(stranger.edges), stranger.edge_count, stranger.names) == (5, 25, ["The Stranger"])
    assert [edge[0] for edge in stranger.edges] == sorted(edge[0] for edge in stranger.edges)
    # One edge between two missing nodes is evidence for both.
    ((_, source, relation, target),) = found["ghost-owner"].edges
    assert (source, relation, target) == ("ghost-owner", "owns", "lost-locket")
    assert found["lost-locket"].edges == found["ghost-owner"].edges


def test_same_triple_with_other_attributes_is_no_duplicate(
    sample: tuple[Path, bible.Sample],
) -> None:
    with bible.snapshot(sample[0]) as db:
        groups = {(g.source, g.relation, g.target) for g in bible.duplicates(db)}
        near = db.execute(
            "SELECT source, relation, target FROM edges WHERE attributes LIKE '%flashback%'"
        ).fetchone()
        copies = db.execute(
            "SELECT count(*) FROM edges WHERE source = ? AND relation = ? AND target = ?", near
        ).fetchone()[0]
    assert copies == 2
    assert tuple(near) not in groups


def test_init_is_idempotent_and_the_sample_needs_an_empty_bible(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bible.db"
    assert bible.init_database(path) is None
    assert bible.init_database(path) is None
    assert bible.init_database(path, sample=True) is not None
    with pytest.raises(UserError, match="already holds a graph"):
        bible.init_database(path, sample=True)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == bible.SCHEMA_VERSION


def test_opening_refuses_a_missing_file_or_another_database(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no bible database at"):
        bible.open_bible(tmp_path / "typo.db", write=True)
    assert not (tmp_path / "typo.db").exists()
    with closing(sqlite3.connect(tmp_path / "other.db")) as db:
        db.execute("CREATE TABLE notes (text)")
    with pytest.raises(UserError, match="is not a bible database"):
        bible.open_bible(tmp_path / "other.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all " * 100)
    with pytest.raises(UserError, match="is not a bible database"):
        bible.open_bible(tmp_path / "junk.db")


def test_stub_kind_is_what_every_known_relation_agrees_on() -> None:
    agree = [[1, "x", "appears_in", "s"], [2, "x", "knows", "y"], [3, "y", "knows", "x"]]
    assert infer_stub("x", agree, []) == ("character", "X", Counter(character=3))
    disagree = [[1, "a", "lives_in", "x"], [2, "b", "appears_in", "x"]]
    assert infer_stub("x", disagree, ["The Lighthouse"])[:2] == ("unknown", "The Lighthouse")
    assert infer_stub("old-letter", [[1, "s", "mentions", "old-letter"]], [])[:2] == (
        "unknown",
        "Old Letter",
    )
    assert infer_stub("x", [[1, "x", "follows", "x"]], [])[2] == Counter(scene=2)  # a self-loop


async def test_stubs_are_inferred_from_their_edges_and_flagged_for_review(
    sample: tuple[Path, bible.Sample],
) -> None:
    path, planted = sample
    jobs = plan(path, "missing_nodes")
    for job in jobs:
        await run(job)
    with closing(sqlite3.connect(path)) as db:
        stubs = {
            row[0]: row[1:]
            for row in db.execute("SELECT * FROM nodes WHERE json_extract(attributes, '$.stub')")
        }
        flagged = {row[0] for row in db.execute("SELECT node_id FROM flags WHERE reason = 'stub'")}
    assert set(stubs) == flagged == planted.missing_nodes
    assert {attributes for _, _, attributes in stubs.values()} == {
        '{"needs_review":true,"stub":true}'
    }
    assert stubs["scene-130"][:2] == ("scene", "Scene 130")  # a cast's scene, in the chain
    assert stubs["the-stranger"][:2] == ("character", "The Stranger")  # named by an edge
    assert stubs["lost-locket"][:2] == ("object", "Lost Locket")  # owned by a missing node
    assert stubs["the-lighthouse"][0] == "unknown"  # a place to one edge, a scene to another
    assert stubs["old-letter"][0] == "unknown"  # named only by a relation of no known kind
    for job in jobs:
        if names := job.get("kwargs", {}).get("names"):
            assert stubs[job["args"][0]][1] == names[0]


async def test_each_repair_run_twice_changes_nothing_more(
    sample: tuple[Path, bible.Sample],
) -> None:
    path, planted = sample
    jobs = plan(path, "all")
    assert len(jobs) == planted.gaps.total
    for job in jobs:
        first = await run(job)
        after = dump(path)
        second = await run(job)
        assert (first["already_done"], second["already_done"]) == (False, True)
        assert dump(path) == after, job
    with bible.snapshot(path) as db:
        assert bible.count_gaps(db) == bible.GapCounts()
        assert db.execute("SELECT count(*) FROM repairs").fetchone()[0] == len(jobs)


async def test_a_gap_planned_twice_is_repaired_once_and_audited_twice(
    sample: tuple[Path, bible.Sample],
) -> None:
    path, _ = sample
    first, second = plan(path, "all", plan_id="p1"), plan(path, "all", plan_id="p2")
    for job in first:
        await run(job)
    graph = tables(path, "nodes", "edges", "flags")
    results = [await run(job) for job in second]
    assert tables(path, "nodes", "edges", "flags") == graph
    assert {(r["already_done"], r["changed"]) for r in results} == {(False, 0)}
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT gap_id, changed FROM repairs WHERE gap_id LIKE 'p2:%'")
        assert {changed for _, changed in rows} == {0}


async def test_repairs_act_on_the_database_as_it_is_when_they_run(
    sample: tuple[Path, bible.Sample],
) -> None:
    path, _ = sample
    orphan, duplicate, missing = (
        plan(path, mode)[0] for mode in ("orphans", "duplicates", "missing_nodes")
    )
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("INSERT INTO edges (source, relation, target) VALUES (?, 'knows', ?)",
                   (orphan["args"][0], orphan["args"][0]))  # fmt: skip
        db.execute("UPDATE edges SET relation = 'knows' WHERE id = ?", duplicate["args"])
        db.execute("INSERT INTO nodes VALUES (?, 'character', 'Written Since', '{}')",
                   missing["args"])  # fmt: skip
    results = [await run(job) for job in (orphan, duplicate, missing)]
    assert [(r["changed"], r["skipped"]) for r in results] == [
        (0, "the node has edges now"),
        (0, "the kept edge is gone or changed"),
        (0, "the node exists"),
    ]


def plan(path: Path, mode: str, plan_id: str = "test") -> list[JobSpec]:
    """The jobs `orchestrator plan gap_fill --mode MODE` would write, without the file."""
    options = argparse.Namespace(database=path, limit=None, max_edges=20, plan_id=plan_id)
    return list(gap_fill.WORKFLOW.modes[mode](options))


async def run(job: JobSpec) -> dict[str, Any]:
    """Run a job's task the way a worker does."""
    function = default_registry()[job["task"]].function
    result: dict[str, Any] = await function(*job["args"], **job.get("kwargs", {}))
    return result


def dump(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def tables(path: Path, *names: str) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as db:
        return {name: sorted(db.execute(f"SELECT * FROM {name}")) for name in names}
