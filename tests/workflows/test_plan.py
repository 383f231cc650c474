"""Planning from the command line, in both of its forms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.job import JOB_SPEC
from tests.conftest import CliRunner

REPO = Path(__file__).resolve().parents[2]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_planning_twice_writes_01_then_02_with_valid_sleepers(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    args = ("plan", "system_test", "--mode", "stress_supervisor", "--count", "10")
    first, second = run_cli(*args), run_cli(*args)
    assert (first.code, second.code) == (0, 0)
    manifests = tmp_path / "manifests"
    assert first.out == (
        "wrote manifests/system_test_stress_supervisor_01.jsonl: "
        "10 jobs (system.sleep x10), mode stress_supervisor\n"
    )
    assert "system_test_stress_supervisor_02.jsonl" in second.out
    for name in (
        "system_test_stress_supervisor_01.jsonl",
        "system_test_stress_supervisor_02.jsonl",
    ):
        lines = read_lines(manifests / name)
        assert len(lines) == 10
        for line in lines:
            JOB_SPEC.validate_python(line)
            assert line["task"] == "system.sleep"
            seconds = line["args"]
            assert isinstance(seconds, list)
            assert len(seconds) == 1
            assert 90 <= seconds[0] <= 150
            assert line["meta"]["workflow"] == "system_test"


def test_seed_makes_a_plan_repeatable_and_bounds_are_kept(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    args = (
        "plan",
        "system_test",
        "--count",
        "50",
        "--seed",
        "7",
        "--min-seconds",
        "1",
        "--max-seconds",
        "2",
    )
    run_cli(*args)
    run_cli(*args)
    one, two = sorted((tmp_path / "manifests").iterdir())
    assert one.read_bytes() == two.read_bytes()
    assert all(1 <= line["args"][0] <= 2 for line in read_lines(one))


@pytest.mark.parametrize(("mode", "task"), [("debug", "system.echo"), ("crud", "system.crud")])
def test_other_modes_plan_their_tasks(
    run_cli: CliRunner, tmp_path: Path, mode: str, task: str
) -> None:
    result = run_cli("plan", "system_test", "--mode", mode, "--count", "3")
    assert result.code == 0
    lines = read_lines(tmp_path / "manifests" / f"system_test_{mode}_01.jsonl")
    assert [line["task"] for line in lines] == [task] * 3


def test_manifests_dir_setting_and_flag(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MANIFESTS_DIR", str(tmp_path / "from-env"))
    run_cli("plan", "system_test", "--mode", "debug")
    run_cli(
        "plan", "system_test", "--mode", "debug", "--manifests-dir", str(tmp_path / "from-flag")
    )
    assert [p.name for p in (tmp_path / "from-env").iterdir()] == ["system_test_debug_01.jsonl"]
    assert [p.name for p in (tmp_path / "from-flag").iterdir()] == ["system_test_debug_01.jsonl"]


def test_bad_plan_options_are_one_line_and_leave_no_manifest(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    result = run_cli("plan", "system_test", "--min-seconds", "5", "--max-seconds", "1")
    assert result.code == 2
    assert (
        result.err
        == "orchestrator: error: need 0 <= --min-seconds <= --max-seconds, got 5.0 and 1.0\n"
    )
    assert list((tmp_path / "manifests").iterdir()) == []
    assert run_cli("plan", "system_test", "--count", "0").code == 2
    assert run_cli("plan", "no_such_workflow").code == 2


def test_plan_script_form_and_module_entry_point(tmp_path: Path) -> None:
    script = REPO / "workflows" / "system_test" / "plan.py"
    done = subprocess.run(
        [sys.executable, str(script), "--mode", "debug", "--count", "2"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "manifests" / "system_test_debug_01.jsonl").exists()
    helped = subprocess.run(
        [sys.executable, "-m", "orchestrator", "plan", "system_test", "--help"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert helped.returncode == 0
    assert "stress_supervisor: long sleepers" in " ".join(helped.stdout.split())


def test_a_plan_of_one_job_says_one_job(run_cli: CliRunner, tmp_path: Path) -> None:
    """One job is "1 job", never "1 jobs"."""
    result = run_cli("plan", "system_test", "--mode", "debug", "--count", "1")
    assert result.out == (
        "wrote manifests/system_test_debug_01.jsonl: 1 job (system.echo x1), mode debug\n"
    )


def test_a_relative_crud_database_is_planned_as_an_absolute_path(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """A worker started in another directory must write to the file the planner meant."""
    result = run_cli("plan", "system_test", "--mode", "crud", "--count", "2", "--database", "x.db")
    assert result.code == 0, result.err
    lines = read_lines(tmp_path / "manifests" / "system_test_crud_01.jsonl")
    assert {line["kwargs"]["database"] for line in lines} == {str(tmp_path / "x.db")}
