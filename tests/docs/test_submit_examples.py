""" "Submit from any language", run as written against a running `orchestrator up`: the
shell block (redis-cli), the Python block and, where `node` is installed, the Node
block, each in a fresh shell of the directory `up` runs in. They once used port 6379
while `up` served 6399, and the Node one neither ran as a file nor exited."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from orchestrator.stack.record import read_record
from orchestrator.stack.redis_server import free_port
from tests.docs.test_readme import REPO

FENCED = re.compile(
    r"<!-- readme-test: (?P<name>[a-z-]+) -->\n```(?P<lang>[a-z]+)\n(?P<body>.*?)```", re.DOTALL
)


def block(name: str) -> str:
    (body,) = [
        m["body"] for m in FENCED.finditer((REPO / "README.md").read_text()) if m["name"] == name
    ]
    return body


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell with this project installed: its commands on PATH, no Redis set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "ORCHESTRATOR_"))}
    if "ORCHESTRATOR_REDIS_SERVER" in os.environ:
        env["ORCHESTRATOR_REDIS_SERVER"] = os.environ["ORCHESTRATOR_REDIS_SERVER"]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return env | {"ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5", **extra}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """`up` running in `tmp_path`, its Redis on a port that is not 6379."""
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "up", "--metal", "2", "--cloud", "1", "--no-web",
         "--redis-port", str(free_port())],
        cwd=tmp_path, env=user_env(), stdout=(tmp_path / "up.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (record := read_record(tmp_path / "data")) is None or record.stopped_at:
            assert process.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "up never recorded its stack"
            time.sleep(0.1)
        assert ":6379/" not in record.redis_url
        yield tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def shell(body: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", body],
        cwd=cwd, env=user_env(**env), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_the_submit_examples_run_as_written_against_up(up: Path) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    done = shell(block("submit"), up)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout

    url = shell("orchestrator redis-url", up).stdout.strip()
    assert url.startswith("redis://")
    assert ":6379/" not in url
    (up / "submit.py").write_text(block("submit-python"))
    python = subprocess.run(
        [sys.executable, "submit.py"], cwd=up, env=user_env(REDIS_URL=url),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert python.returncode == 0, python.stderr
    expected = 1
    if shutil.which("node") and shutil.which("npm"):
        (up / "submit.mjs").write_text(block("submit-node"))
        installed = shell("npm install --silent --no-audit --no-fund redis", up)
        assert installed.returncode == 0, installed.stderr[-2000:]
        node = shell("node submit.mjs", up, REDIS_URL=url)  # exits by itself: quit()
        assert node.returncode == 0, node.stderr
        expected = 2
    verified = shell("orchestrator verify --batch thumbs-night --wait --json", up)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    totals = orjson.loads(verified.stdout)["totals"]
    assert (totals["done"], totals["failed"]) == (expected, 0)
