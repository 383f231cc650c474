"""A workflow brings its own `orchestrator` subcommands; the core names none of them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.workflow import describe_error, discover_workflows, load_workflows
from tests.conftest import CliRunner

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_the_commands_a_workflow_brings(run_cli: CliRunner) -> None:
    result = run_cli("--help")
    assert result.code == 0
    commands = result.out.split("commands:")[1]
    assert "bible               create a story bible (bible.db) or count its gaps" in commands
    assert result.err == ""
    assert discover_workflows()["gap_fill"].register_commands is not None


def test_the_core_package_knows_no_workflow() -> None:
    named = [
        path.relative_to(REPO)
        for path in (REPO / "orchestrator").rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".tmpl", ".lua"}
        and "bible" in path.read_text().lower()
    ]
    assert named == []


def test_a_broken_workflow_is_reported_and_the_others_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "someflows"
    for name, plan in {
        "good": (
            "from orchestrator.workflow import Workflow\n"
            "WORKFLOW = Workflow(name='good', summary='Good.', modes={'a': lambda o: []})\n"
        ),
        "broken": "raise RuntimeError('oops\\nsecond line')\n",
        "renamed": (
            "from orchestrator.workflow import Workflow\n"
            "WORKFLOW = Workflow(name='other', summary='No.', modes={'a': lambda o: []})\n"
        ),
    }.items():
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
        (package / name / "plan.py").write_text(plan)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    found, broken = load_workflows("someflows")
    assert list(found) == ["good"]
    assert {name: describe_error(exc) for name, exc in broken.items()} == {
        "broken": "RuntimeError: oops second line",
        "renamed": "ValueError: someflows.renamed.plan: WORKFLOW.name must be 'renamed'",
    }
    with pytest.raises(RuntimeError, match="oops"):
        discover_workflows("someflows")
    for name in [m for m in sys.modules if m.startswith("someflows")]:
        monkeypatch.delitem(sys.modules, name)
