"""A task module a user got wrong ends the worker and dispatch in one line naming it:
a syntax error, an error at import, a package it needs, two tasks of one name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_stack import REPO, write_manifest

BROKEN = {
    "syntax": ("def analyze(:\n    pass\n", "task module mytasks.image: SyntaxError at "),
    "raises": (
        "raise RuntimeError('no GPU here')\n",
        "task module mytasks.image failed to import: RuntimeError: no GPU here",
    ),
    "missing": (
        "import not_installed_anywhere\n",
        "task module mytasks.image: ModuleNotFoundError: No module named 'not_installed_anywhere'",
    ),
}


def project(tmp_path: Path, image: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "image.py").write_text(image)
    for name, text in (extra or {}).items():
        (package / name).write_text(text)
    return {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
        "ORCHESTRATOR_TASK_PACKAGES": '["mytasks"]',
    }


def orchestrator(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_task_module_is_one_line_for_the_worker_and_dispatch(
    tmp_path: Path, redis_url: str, kind: str
) -> None:
    source, said = BROKEN[kind]
    env = project(tmp_path, source) | {"REDIS_URL": redis_url}
    manifest = write_manifest(tmp_path / "m_01.jsonl", [{"task": "image.analyze", "args": []}])
    for args in (
        ["worker", "--pool", "metal", "--burst"],
        ["dispatch", str(manifest), "--backlog", "backlog:x"],
    ):
        done = orchestrator(env, tmp_path, *args)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert said in line, line


def test_two_tasks_of_one_name_are_refused_naming_both_places(tmp_path: Path) -> None:
    image = "from orchestrator.registry import task\n@task\ndef analyze(): ...\n"
    other = "from orchestrator.registry import task\n@task(name='image.analyze')\ndef go(): ...\n"
    env = project(tmp_path, image, {"video.py": other})
    manifest = write_manifest(tmp_path / "m_01.jsonl", [{"task": "image.analyze", "args": []}])
    done = orchestrator(env, tmp_path, "dispatch", str(manifest), "--backlog", "backlog:x")
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "task 'image.analyze' is defined twice: mytasks.image.analyze (" in line
    assert "mytasks.video.go (" in line
    assert "image.py:2" in line
