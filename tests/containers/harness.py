"""The compose stack for real: a Docker engine, the project's image, and one compose
project per test, torn down with its volumes afterwards.

Everything runs through the same commands a user types (`docker build`, `docker compose
…`), so what these tests prove is what the README's "Run as containers" promises. The
engine and the base images come from `scripts/containers-setup`, shared with `.ci/run`:
one place knows how to get an engine on these machines.

Compose is Debian's `docker-compose` 1.29 unless `ORCHESTRATOR_COMPOSE` names another
(`ORCHESTRATOR_COMPOSE="docker compose"` for v2): compose.yaml serves both.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SETUP = REPO / "scripts" / "containers-setup"
IMAGE = "orchestrator:local"
LABEL = "org.opencontainers.image.title=orchestrator"  # the Dockerfile's runtime stage
BUILD_LABEL = "org.opencontainers.image.title=orchestrator-build"  # its build stage
SKIP = 77  # containers-setup: no engine can be had on this machine
APP_SERVICES = ("conductor", "worker-metal", "worker-cloud")
APP_UID = 10001  # the image's `orchestrator` user
BLOCK = re.compile(r"<!-- readme-test: containers -->\n```sh\n(?P<body>.*?)```", re.DOTALL)

T = TypeVar("T")


def docker_binary() -> str:
    """Debian's client, which matches its engine; another `docker` on PATH may be newer
    than the engine's API."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def compose_binary() -> list[str]:
    return shlex.split(os.environ.get("ORCHESTRATOR_COMPOSE", "docker-compose"))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment compose interpolates from: the conftest's unreachable REDIS_URL
    and any ORCHESTRATOR_* of the developer's shell would otherwise reach the containers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "ORCHESTRATOR_"))}
    env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False,
        env=env if env is not None else clean_env(), cwd=REPO,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited {done.returncode}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@dataclass(frozen=True)
class Engine:
    """What `containers-setup` left: why there is no engine, or the daemon it started
    (None when one was running already, which is then left alone)."""

    skip_reason: str | None
    started_pid: int | None = None

    def stop_if_started(self) -> None:
        """A daemon the suite started does not outlive it (unless ORCHESTRATOR_KEEP_DOCKERD)."""
        if self.started_pid is None or os.environ.get("ORCHESTRATOR_KEEP_DOCKERD"):
            return
        os.kill(self.started_pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{self.started_pid}").exists(), "dockerd to stop", 60)


def ensure_engine() -> Engine:
    """Install and start what the suite needs, as `.ci/run` does."""
    done = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode == SKIP:
        return Engine(done.stdout.strip() or "no Docker engine")
    if done.returncode != 0:
        raise RuntimeError(f"{SETUP} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    started = re.search(r"started dockerd pid (\d+)", done.stdout)
    return Engine(None, int(started[1]) if started else None)


def build_image() -> float:
    """`docker build` as the README does it; returns its seconds."""
    started = time.monotonic()
    run([docker_binary(), "build", "--network", "host", "-t", IMAGE, str(REPO)], timeout=600)
    seconds = time.monotonic() - started
    # The image this one replaced, now untagged, and every build stage but the newest
    # (also untagged: the layer cache that keeps the next build to seconds): a machine
    # that runs the suite after every change would otherwise fill its disk with them.
    run([docker_binary(), "image", "prune", "-f", "--filter", f"label={LABEL}"])
    stages = run([
        docker_binary(), "image", "ls", "-q", "--filter", "dangling=true",
        "--filter", f"label={BUILD_LABEL}",
    ]).stdout.split()  # fmt: skip
    if len(stages) > 1:  # newest first
        run([docker_binary(), "image", "rm", *stages[1:]], check=False)
    return seconds


def inspect(*names: str) -> list[dict[str, Any]]:
    reply: list[dict[str, Any]] = json.loads(run([docker_binary(), "inspect", *names]).stdout)
    return reply


def wait_for(condition: Callable[[], T], what: str, timeout: float, every: float = 0.5) -> T:
    """Poll until `condition` returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def readme_commands() -> list[str]:
    """The README's containers walkthrough (`<!-- readme-test: containers -->`), a
    command a line, comments dropped."""
    found = BLOCK.search(README.read_text())
    assert found, f"{README} has no block marked `readme-test: containers`"
    lines = [line.split("  #")[0].strip() for line in found["body"].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Stack:
    """One compose project: its own containers, network and volumes."""

    env_file: Path
    extra_files: Sequence[Path] = ()
    project: str = field(default_factory=lambda: f"orct{uuid.uuid4().hex[:8]}")
    healthy_after: float | None = None  # seconds from `up` to all healthy, once measured

    def argv(self, *args: str) -> list[str]:
        files = [
            arg for path in (REPO / "compose.yaml", *self.extra_files) for arg in ("-f", str(path))
        ]
        return [
            *compose_binary(), "-p", self.project, "--env-file", str(self.env_file),
            "--project-directory", str(REPO), *files, *args,
        ]  # fmt: skip

    def compose(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, check=check)

    def readme(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """A README line run as written, against this project: `docker-compose -p
        orchestrator ARGS` (or v2's `docker compose -p orchestrator ARGS`) as this
        project's compose, `docker build …` and `scripts/…` as they are."""
        words = shlex.split(command)
        for prefix in (["docker-compose"], ["docker", "compose"]):
            if words[: len(prefix)] == prefix:
                args = words[len(prefix) :]
                assert args[:2] == ["-p", "orchestrator"], f"no project name: {command}"
                return self.compose(*args[2:], timeout=timeout)
        if words[0] == "docker":
            return run([docker_binary(), *words[1:]], timeout=timeout)
        assert words[0].startswith("scripts/"), f"not a README command: {command}"
        return run([str(REPO / words[0]), *words[1:]], timeout=timeout)

    def shell(
        self, *argv: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A command in the `shell` service, as the README runs the CLI."""
        return self.compose("exec", "-T", "shell", *argv, timeout=timeout, check=check)

    def containers(self, service: str, *, stopped: bool = False) -> list[str]:
        """Ids of the service's running containers (and its stopped ones with `stopped`)."""
        return self.compose("ps", *(["-a"] if stopped else []), "-q", service).stdout.split()

    def health(self, service: str) -> list[str]:
        """Docker's health status of each container of `service` (`none`: not checked)."""
        ids = self.containers(service)
        if not ids:
            return []
        return [
            (c["State"].get("Health") or {}).get("Status", "none")
            if c["State"]["Running"]
            else "stopped"
            for c in inspect(*ids)
        ]

    def probe(self, service: str) -> set[int]:
        """Exit codes of the image's HEALTHCHECK command, run now in each container."""
        return {
            run([docker_binary(), "exec", c, "orchestrator", "healthcheck"], check=False).returncode
            for c in self.containers(service)
        }

    def wait_healthy(self, services: Sequence[str], timeout: float = 120) -> float:
        started = time.monotonic()

        def all_healthy() -> bool:
            return all((s := self.health(name)) and set(s) == {"healthy"} for name in services)

        wait_for(all_healthy, f"{', '.join(services)} healthy", timeout, every=1)
        return time.monotonic() - started

    def up(self, *args: str, timeout: float = 180) -> float:
        """`up -d`, then wait until every running service is healthy; returns seconds."""
        started = time.monotonic()
        self.compose("up", "-d", *args, timeout=timeout)
        self.wait_healthy(["redis", *APP_SERVICES])
        self.healthy_after = time.monotonic() - started
        return self.healthy_after

    def receipts(self, batch: str) -> dict[str, dict[str, Any]]:
        """The batch's receipts, read from Redis by the image's own client."""
        code = (
            "import json, sys, redis; r = redis.Redis.from_url('redis://redis:6379/0');"
            "h = r.hgetall(sys.argv[1]);"
            "print(json.dumps({k.decode(): json.loads(v) for k, v in h.items()}))"
        )
        out = self.shell("python", "-c", code, "{orc}:receipts:" + batch).stdout
        reply: dict[str, dict[str, Any]] = json.loads(out)
        return reply

    def status(self) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.shell("orchestrator", "status", "--json").stdout)
        return reply

    def plan(self, count: int, low: float, high: float) -> str:
        """A stress_supervisor manifest of `count` short sleepers; returns its path."""
        out = self.shell(
            "orchestrator", "plan", "system_test", "--mode", "stress_supervisor",
            "--count", str(count), "--min-seconds", str(low), "--max-seconds", str(high),
            "--seed", "1",
        ).stdout  # fmt: skip
        found = re.search(r"wrote (\S+):", out)
        assert found, out
        return found[1]

    def dispatch(self, manifest: str) -> None:
        self.shell("orchestrator", "dispatch", manifest, "--backlog", "backlog:stress")

    def verify(self, manifest: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.shell(
            "orchestrator", "verify", manifest, "--wait", "--timeout", str(timeout),
            timeout=timeout + 30, check=False,
        )  # fmt: skip

    def logs(self, tail: int = 60) -> str:
        done = self.compose("logs", "--no-color", "--tail", str(tail), check=False)
        return done.stdout + done.stderr

    def down(self) -> None:
        """Everything of this project goes, volumes too, even after a failed test."""
        self.compose(
            "down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=300, check=False
        )


def batch_of(manifest: str) -> str:
    return Path(manifest).stem


def overlapping(receipts: Sequence[dict[str, Any]], at: float, slack: float = 0.0) -> int:
    """How many of these runs were going on at the instant `at`, counting runs that
    started up to `slack` seconds later (jobs forwarded together start a few ms apart)."""
    return sum(
        1
        for r in receipts
        if r["started_at"] is not None and r["started_at"] <= at + slack < r["ended_at"]
    )
