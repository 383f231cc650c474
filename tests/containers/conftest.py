"""Fixtures of the containers suite: an engine and the image once per session, a
compose project per test (down with its volumes afterwards, logs shown on failure).

Every test here is marked `containers`: the default pytest run leaves them out, and
`.ci/run` runs them after the rest (`pytest -m containers -n 2 tests/containers`).
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.containers import harness
from tests.containers.harness import Stack

FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    """A Docker engine, installed and started when missing; skip only where none can be."""
    started = harness.ensure_engine()
    if started.skip_reason is not None:
        pytest.skip(started.skip_reason)
    yield
    started.stop_if_started()


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """The project's image, built once per session (cached layers after the first).
    Sessions of one run (xdist workers) build one at a time: the engine refuses a second
    prune while one runs, and the second build is the cache's."""
    with (Path(tempfile.gettempdir()) / "orchestrator-image-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        FIGURES["build (this run)"] = f"{harness.build_image():.1f} s"
    size = harness.inspect(harness.IMAGE)[0]["Size"]
    FIGURES["image size"] = f"{size / 1e6:.0f} MB"
    return harness.IMAGE


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StackFactory]:
    """`make_stack(**env)`: a compose project with its own env file (never the
    developer's ./.env); every project made is torn down, volumes too."""
    made: list[Stack] = []

    def make(extra_files: tuple[Path, ...] = (), **env: str) -> Stack:
        env_file = tmp_path / f"stack{len(made)}.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        stack = Stack(env_file=env_file, extra_files=extra_files)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        print(f"--- logs of {stack.project}\n{stack.logs()}")
        stack.down()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "containers: figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
