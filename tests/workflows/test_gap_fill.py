"""gap_fill end to end: `bible init`, `plan gap_fill`, repairs racing in several
processes, and a batch through the conductor and real workers that closes the loop."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from subprocess import PIPE
from typing import Any

import orjson

from tests.conftest import CliRunner, StackFactory

# Runs every job of a manifest through its task, 8 at a time, as a worker process would.
RUN_ALL = """
import sys, anyio, orjson
from orchestrator.registry import default_registry

async def main(manifest):
    registry = default_registry()
    jobs = [orjson.loads(line) for line in open(manifest, "rb")]
    results, limiter = [], anyio.CapacityLimiter(8)

    async def run(job):
        async with limiter:
            task = registry[job["task"]].function
            results.append(await task(*job["args"], **job.get("kwargs", {})))

    async with anyio.create_task_group() as tasks:
        for job in jobs:
            tasks.start_soon(run, job)
    sys.stdout.write(orjson.dumps(results).decode())

anyio.run(main, sys.argv[1])
"""


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def sample_bible(run_cli: CliRunner, path: Path) -> Path:
    result = run_cli("bible", "init", "--sample", "--database", str(path))
    assert result.code == 0, result.err
    return path


def scan(run_cli: CliRunner, path: Path) -> dict[str, Any]:
    result = run_cli("bible", "scan", "--database", str(path), "--json")
    assert result.code == 0, result.err
    report: dict[str, Any] = orjson.loads(result.out)
    return report


def dump(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def test_bible_init_and_scan(run_cli: CliRunner, tmp_path: Path) -> None:
    init = run_cli("bible", "init", "--sample", "--path", "data/bible.db")
    assert init.code == 0
    assert init.out == (
        "wrote the sample world to data/bible.db: 242 nodes, 746 edges; gaps: 14 missing "
        "nodes, 12 orphans, 10 duplicate groups (13 redundant edges)\n"
    )
    assert run_cli("bible", "init").out == "data/bible.db: schema up to date\n"
    again = run_cli("bible", "init", "--sample")
    assert (again.code, again.err) == (
        2,
        "orchestrator: error: data/bible.db already holds a graph; the sample needs an empty one\n",
    )
    assert run_cli("bible", "scan").out.splitlines()[0] == (
        "data/bible.db: 242 nodes, 746 edges, 36 gaps"
    )
    assert scan(run_cli, Path("data/bible.db")) == {
        "database": "data/bible.db", "nodes": 242, "edges": 746, "missing_nodes": 14,
        "orphans": 12, "duplicate_groups": 10, "duplicate_edges": 13,
    }  # fmt: skip
    missing = run_cli("bible", "scan", "--database", "nowhere.db")
    assert (missing.code, missing.err) == (
        2,
        "orchestrator: error: no bible database at nowhere.db "
        "(create one: orchestrator bible init)\n",
    )
    assert not Path("nowhere.db").exists()


def test_plan_writes_one_job_per_gap_of_the_modes_asked(run_cli: CliRunner, tmp_path: Path) -> None:
    database = sample_bible(run_cli, tmp_path / "bible.db")
    common = ("--database", str(database), "--plan-id", "p1")
    result = run_cli("plan", "gap_fill", "--mode", "all", *common)
    assert result.out == (
        "wrote manifests/gap_fill_all_01.jsonl: 36 jobs (bible.create_missing_node x14, "
        "bible.drop_duplicate_edges x10, bible.flag_orphan x12), mode all\n"
    )
    lines = read_lines(tmp_path / "manifests" / "gap_fill_all_01.jsonl")
    assert [line["meta"]["gap"] for line in lines] == (
        ["missing_node"] * 14 + ["orphan"] * 12 + ["duplicate"] * 10
    )
    assert all(line["kwargs"]["database"] == str(database) for line in lines)
    assert len({line["kwargs"]["gap_id"] for line in lines}) == 36
    assert lines[0]["kwargs"]["gap_id"] == f"p1:missing_node:{lines[0]['args'][0]}"

    for mode, task, count in [
        ("missing_nodes", "bible.create_missing_node", 14),
        ("orphans", "bible.flag_orphan", 12),
        ("duplicates", "bible.drop_duplicate_edges", 10),
    ]:
        assert run_cli("plan", "gap_fill", "--mode", mode, *common).code == 0
        lines = read_lines(tmp_path / "manifests" / f"gap_fill_{mode}_01.jsonl")
        assert {line["task"] for line in lines} == {task}
        assert len(lines) == count

    run_cli("plan", "gap_fill", "--limit", "5", "--max-edges", "3", *common)
    lines = read_lines(tmp_path / "manifests" / "gap_fill_all_02.jsonl")
    assert len(lines) == 5
    assert max(len(line["kwargs"]["edges"]) for line in lines) <= 3


def test_plan_of_a_bible_without_a_file_is_one_line(run_cli: CliRunner, tmp_path: Path) -> None:
    """A --database that does not exist is one error line, and no manifest is left."""
    missing = run_cli("plan", "gap_fill", "--database", "nowhere.db")
    assert missing.code == 2
    assert missing.err.startswith("orchestrator: error: no bible database at nowhere.db")
    assert list((tmp_path / "manifests").iterdir()) == []


def test_plan_of_a_bible_without_gaps_says_nothing_to_repair_and_writes_no_manifest(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """A clean bible is good news: exit 0, "nothing to repair", and no manifest at all."""
    run_cli("bible", "init", "--database", "empty.db")
    empty = run_cli("plan", "gap_fill", "--database", "empty.db")
    assert (empty.code, empty.err) == (0, "")
    assert empty.out == "nothing to repair: empty.db has no gaps; no manifest written\n"
    orphans = run_cli("plan", "gap_fill", "--mode", "orphans", "--database", "empty.db")
    assert (orphans.code, orphans.out) == (
        0,
        "nothing to repair: empty.db has no orphans; no manifest written\n",
    )
    assert list((tmp_path / "manifests").iterdir()) == []
    # The numbers handed out stay free: the next real plan is _01.
    sample_bible(run_cli, tmp_path / "bible.db")
    assert run_cli("plan", "gap_fill", "--database", str(tmp_path / "bible.db")).code == 0
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["gap_fill_all_01.jsonl"]


def test_a_relative_database_is_planned_as_an_absolute_path(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """Jobs carry the bible's absolute path, so a worker in another directory finds it."""
    sample_bible(run_cli, Path("data/bible.db"))
    assert run_cli("plan", "gap_fill", "--database", "data/bible.db").code == 0
    lines = read_lines(tmp_path / "manifests" / "gap_fill_all_01.jsonl")
    expected = str(tmp_path / "data" / "bible.db")
    assert {line["kwargs"]["database"] for line in lines} == {expected}
    # A worker started elsewhere repairs the planned bible, not one of its own directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run(
        [sys.executable, "-c", RUN_ALL, str(tmp_path / "manifests" / "gap_fill_all_01.jsonl")],
        capture_output=True, check=False, cwd=elsewhere,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr.decode()
    assert len(orjson.loads(ran.stdout)) == 36
    assert scan(run_cli, Path("data/bible.db"))["missing_nodes"] == 0


def test_repairs_racing_in_three_processes_lose_nothing_and_repeat_nothing(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    raced = sample_bible(run_cli, tmp_path / "raced.db")
    alone = sample_bible(run_cli, tmp_path / "alone.db")
    run_cli("plan", "gap_fill", "--database", str(raced), "--plan-id", "p1")
    run_cli("plan", "gap_fill", "--database", str(alone), "--plan-id", "p1")
    manifests = sorted((tmp_path / "manifests").iterdir())
    # Three processes run the same 36 jobs at once, 8 at a time each: every gap is
    # raced by three writers.
    command = [sys.executable, "-c", RUN_ALL, str(manifests[0])]
    racers = [subprocess.Popen(command, stdout=PIPE, stderr=PIPE) for _ in range(3)]
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], outputs[0][1].decode()
    results = [result for out, _ in outputs for result in orjson.loads(out)]
    done_first = [r["gap_id"] for r in results if not r["already_done"]]
    assert sorted(done_first) == sorted({r["gap_id"] for r in results})  # each gap once
    assert len(done_first) == 36

    solo = subprocess.run(
        [sys.executable, "-c", RUN_ALL, str(manifests[1])], capture_output=True, check=True
    )
    assert len(orjson.loads(solo.stdout)) == 36
    graph = "SELECT {} FROM {} ORDER BY 1, 2"
    with closing(sqlite3.connect(raced)) as one, closing(sqlite3.connect(alone)) as other:
        for columns, table in [
            ("*", "nodes"),
            ("*", "edges"),
            ("node_id, reason, gap_id, detail", "flags"),
            ("gap_id, action, subject, changed, detail", "repairs"),
        ]:
            query = graph.format(columns, table)
            assert one.execute(query).fetchall() == other.execute(query).fetchall(), table
    assert scan(run_cli, raced)["missing_nodes"] == 0


def test_gap_fill_batch_through_the_conductor_closes_the_loop(
    stack: StackFactory, run_cli: CliRunner, tmp_path: Path
) -> None:
    database = sample_bible(run_cli, tmp_path / "bible.db")
    before = scan(run_cli, database)
    assert run_cli("plan", "gap_fill", "--mode", "all", "--database", str(database)).code == 0
    manifest = tmp_path / "manifests" / "gap_fill_all_01.jsonl"
    run = stack()
    run.worker("metal", 4)
    run.worker("metal", 4)
    run.worker("cloud", 4)
    run.conductor()
    run.dispatch(manifest)
    receipts = run.wait_for_receipts("gap_fill_all_01", 36)
    assert [r for r in receipts if r["status"] != "succeeded"] == []
    verified = run_cli("verify", str(manifest))
    assert verified.code == 0, verified.out
    assert len({r["worker"] for r in receipts}) >= 2  # several processes wrote at once
    after = scan(run_cli, database)
    assert (before["missing_nodes"], before["orphans"], before["duplicate_groups"]) == (14, 12, 10)
    assert (after["missing_nodes"], after["orphans"], after["duplicate_groups"]) == (0, 0, 0)
    assert after["nodes"] == before["nodes"] + 14
    assert after["edges"] == before["edges"] - 13
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT count(*) FROM repairs").fetchone()[0] == 36  # no write lost

    # The same batch again (dispatched under another name): the database does not change.
    repaired = dump(database)
    rerun = shutil.copy(manifest, tmp_path / "gap_fill_rerun_01.jsonl")
    run.dispatch(Path(rerun))
    again = run.wait_for_receipts("gap_fill_rerun_01", 36)
    assert {(r["status"], r["result"]["already_done"]) for r in again} == {("succeeded", True)}
    assert dump(database) == repaired
