"""`orchestrator new-workflow`: a scaffold that works and passes its test as generated,
and never overwrites anything.

Scaffolds go into a copy of this project's packages, never into the real tree: the
generated test then runs in a subprocess with the copy first on PYTHONPATH, so the new
workflow and task are found by the same discovery as in a real checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CliRunner

REPO = Path(__file__).resolve().parents[2]


# The project as shipped, never what a user added since (their `new-workflow thumbnails`
# must not make these tests fail): the core package, one workflow and its task module,
# and what a generated test needs from tests/.
SKELETON = (
    "orchestrator", "workers/__init__.py", "workers/tasks/__init__.py",
    "workers/tasks/system.py", "workflows/__init__.py", "workflows/system_test",
    "tests/__init__.py", "tests/conftest.py", "tests/live_stack.py", "tests/fixtures",
    "tests/workflows/__init__.py", "pyproject.toml",
)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for part in SKELETON:
        source, target = REPO / part, root / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy(source, target)
    return root


@pytest.mark.parametrize("style", [[], ["--celery"]], ids=["task", "celery"])
def test_scaffolded_workflow_plans_and_passes_its_generated_test(
    run_cli: CliRunner, project: Path, style: list[str]
) -> None:
    result = run_cli("new-workflow", "harvest", "--root", str(project), *style)
    assert result.code == 0, result.err
    if style:
        assert "@shared_task(" in (project / "workers" / "tasks" / "harvest.py").read_text()
    files = [
        "workflows/harvest/__init__.py",
        "workflows/harvest/plan.py",
        "workers/tasks/harvest.py",
        "tests/workflows/test_workflow_harvest.py",
    ]
    assert result.out.splitlines()[1:5] == [f"  {name}" for name in files]
    assert '  task = "harvest.*"\n  pool = "cloud"' in result.out
    env = {**os.environ, "PYTHONPATH": str(project)}
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", files[-1]],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "2 passed" in tested.stdout
    for check in (["check"], ["format", "--check"]):
        linted = subprocess.run(
            [sys.executable, "-m", "ruff", *check, *files],
            cwd=project, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert linted.returncode == 0, linted.stdout


def test_category_and_summary_options_and_root_found_from_a_subdirectory(
    run_cli: CliRunner, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "tests")
    result = run_cli(
        "new-workflow", "thumbnails", "--category", "image_ops", "--summary", "Small images."
    )
    assert result.code == 0, result.err
    assert result.out.startswith(f"created workflow thumbnails in {project}:")
    plan = (project / "workflows" / "thumbnails" / "plan.py").read_text()
    assert plan.startswith('"""thumbnails: Small images.')
    assert 'spec("image_ops.process"' in plan
    assert (project / "workers" / "tasks" / "image_ops.py").is_file()
    assert 'task = "image_ops.*"' in result.out


def test_refuses_to_overwrite_and_rejects_bad_names(
    run_cli: CliRunner, project: Path, tmp_path: Path
) -> None:
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    taken = run_cli("new-workflow", "system_test", "--root", str(project))
    assert (taken.code, taken.err) == (
        2,
        f"orchestrator: error: {project / 'workflows' / 'system_test'} already exists; "
        "choose another name (or --category)\n",
    )
    clash = run_cli("new-workflow", "checks", "--category", "system", "--root", str(project))
    assert clash.code == 2
    assert "workers/tasks/system.py already exists" in clash.err
    for bad in ("Harvest", "my-flow", "class", "x" * 25):
        assert run_cli("new-workflow", bad, "--root", str(project)).code == 2
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    elsewhere = run_cli("new-workflow", "harvest", "--root", str(tmp_path / "empty"))
    assert elsewhere.code == 2
    assert "is not an orchestrator project" in elsewhere.err


def uncomment_the_example_command(plan: Path) -> None:
    """What the scaffold's comment asks: uncomment the example and add the import."""
    text = plan.read_text()
    start = text.index("# def register_commands")
    end = text.index("\n\n\nWORKFLOW = ")
    example = "\n".join(line[2:] for line in text[start:end].split("\n"))
    text = text[:start] + example.replace("\n#\n", "\n\n") + text[end:]
    text = text.replace(
        "# register_commands=register_commands", "register_commands=register_commands"
    )
    text = text.replace("import Iterator\n", "import Iterator\nfrom typing import Any\n")
    plan.write_text(text)


def orchestrator(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`orchestrator ARGV...` as a user of `project` runs it, in a new process."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_a_scaffolded_workflows_own_command_is_discovered_once_uncommented(
    run_cli: CliRunner, project: Path
) -> None:
    assert run_cli("new-workflow", "harvest", "--root", str(project)).code == 0
    plan = project / "workflows" / "harvest" / "plan.py"
    assert "harvest" not in orchestrator(project, "--help").stdout.split("commands:")[1]
    uncomment_the_example_command(plan)
    for check in (["check"], ["format", "--check"]):
        linted = subprocess.run(
            [sys.executable, "-m", "ruff", *check, str(plan)],
            cwd=project, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert linted.returncode == 0, linted.stdout
    listed = orchestrator(project, "--help")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert "say hello (an example command)" in listed.stdout
    hello = orchestrator(project, "harvest", "--who", "you")
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, "hello, you, from harvest\n", "")
    assert orchestrator(project, "plan", "harvest", "--count", "2").returncode == 0


def test_a_workflow_that_fails_to_load_costs_one_line_not_the_cli(project: Path) -> None:
    broken = project / "workflows" / "broken"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "plan.py").write_text("import no_such_module\n")
    clash = project / "workflows" / "clash"
    shutil.copytree(project / "workflows" / "system_test", clash)
    plan = (clash / "plan.py").read_text()
    plan = plan.replace('name="system_test"', 'name="clash"')
    plan = plan.replace(
        "\n)\n", "\n    register_commands=lambda commands: commands.add_parser('plan'),\n)\n"
    )
    (clash / "plan.py").write_text(plan)
    listed = orchestrator(project, "--help")
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [
        "orchestrator: warning: workflow broken not loaded, its plan and commands left out: "
        "ModuleNotFoundError: No module named 'no_such_module'",
        "orchestrator: warning: workflow clash: its commands not added "
        "(ArgumentError: argument COMMAND: conflicting subparser: plan)",
    ]
    planned = orchestrator(project, "plan", "system_test", "--help")
    assert planned.returncode == 0
    assert "--mode" in planned.stdout
