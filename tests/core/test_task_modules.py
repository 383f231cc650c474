"""A task module a user got wrong ends the worker and dispatch in one line naming it:
a syntax error, an error at import, a package it needs, two tasks of one name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_stack import write_manifest
from tests.user_project import one_line_error, orchestrator, project_env, write_package

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
    files = {"mytasks/image.py": image} | {f"mytasks/{n}": s for n, s in (extra or {}).items()}
    write_package(tmp_path, files)
    return project_env(tmp_path, ["mytasks"])


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
        assert "Traceback" not in done.stderr
        line = one_line_error(done)
        assert said in line, line


def test_two_tasks_of_one_name_are_refused_naming_both_places(tmp_path: Path) -> None:
    image = "from orchestrator.registry import task\n@task\ndef analyze(): ...\n"
    other = "from orchestrator.registry import task\n@task(name='image.analyze')\ndef go(): ...\n"
    env = project(tmp_path, image, {"video.py": other})
    manifest = write_manifest(tmp_path / "m_01.jsonl", [{"task": "image.analyze", "args": []}])
    done = orchestrator(env, tmp_path, "dispatch", str(manifest), "--backlog", "backlog:x")
    line = one_line_error(done)
    assert "task 'image.analyze' is defined twice: mytasks.image.analyze (" in line
    assert "mytasks.video.go (" in line
    assert "image.py:2" in line
