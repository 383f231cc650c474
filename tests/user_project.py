"""A user's own task package written into a test's directory, and `orchestrator` run
against it as that user would: the package on PYTHONPATH, named in task_packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.live_stack import REPO


def write_package(root: Path, files: dict[str, str]) -> None:
    """`files` by path under `root` (`backend/tasks/image.py`), each folder a package."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            if folder != Path("."):
                (root / folder / "__init__.py").touch()
        path.write_text(text)


def project_env(root: Path, packages: list[str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{root}{os.pathsep}{REPO}",
        "ORCHESTRATOR_TASK_PACKAGES": orjson.dumps(packages).decode(),
    }


def orchestrator(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command says; fails the test if it said more (a traceback)."""
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    return line
