"""The README's shell blocks, run as written in a fresh copy of the repository, so that
what a new user copy-pastes cannot drift from what the code does.

A block is run when the line before its fence is `<!-- readme-test: NAME -->`; the
blocks of one test run in order in one shell session per block, all in the same copy
(the first one makes the virtualenv the others use). `./scripts/check` itself is not
one of them: it is this suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[a-z-]+) -->\n```sh\n(?P<body>.*?)```", re.DOTALL)


def blocks(name: str) -> list[str]:
    """The bodies of the README's blocks marked `name`, in order."""
    found = [
        m["body"] for m in BLOCK.finditer((REPO / "README.md").read_text()) if m["name"] == name
    ]
    assert found, f"the README has no block marked readme-test: {name}"
    return found


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's committed files, as `git clone` gives them (no venv, no data)."""
    target = tmp_path_factory.mktemp("readme") / "orchestrator"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def run_block(body: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """One block in `bash -e`, as a user's fresh shell: no Redis settings, no venv active."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "ORCHESTRATOR_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(
        part for part in env["PATH"].split(os.pathsep) if not part.startswith(str(REPO))
    )
    if "ORCHESTRATOR_REDIS_SERVER" in os.environ:  # the suite's choice of server binary
        env["ORCHESTRATOR_REDIS_SERVER"] = os.environ["ORCHESTRATOR_REDIS_SERVER"]
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", body],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# Never beside another demo: test_demo looks for any demo's processes left running.
@pytest.mark.xdist_group("demo")
def test_the_fresh_machine_block_installs_and_runs_the_demo(fresh_clone: Path) -> None:
    """The README's main job, pasted into a new shell of a fresh clone: exit 0, all done."""
    (body,) = blocks("fresh-machine")
    done = run_block(body, fresh_clone, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 30 jobs succeeded" in done.stdout or "jobs succeeded" in done.stdout


def test_the_new_workflow_blocks_run_and_the_projects_tests_still_pass(fresh_clone: Path) -> None:
    """After "Making a new workflow" as written, the scaffold's test and the project's own
    scaffold tests pass: no test depends on what a user added to the tree."""
    if not (fresh_clone / ".venv").exists():
        pytest.skip("needs the venv the fresh-machine block makes (run the module whole)")
    for body in blocks("new-workflow"):
        done = run_block(". .venv/bin/activate\n" + body, fresh_clone, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    again = run_block(
        ". .venv/bin/activate\npytest -q -p no:cacheprovider tests/workflows/test_new_workflow.py",
        fresh_clone,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:]
