"""The container stack, checked without a Docker engine, in seconds: compose.yaml and
the Dockerfile are parsed and every command they run is checked to be real, and a
rehearsal runs the compose services' own commands as local processes. The real engine
runs the same files in tests/containers (`pytest -m containers`, run by .ci/run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from orchestrator.settings import Settings, load_settings
from orchestrator.stack.redis_server import RedisServer, free_port
from tests.live_stack import REPO, write_manifest

COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
APP_SERVICES = ["conductor", "worker-metal", "worker-cloud", "shell"]
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with the defaults (the host environment is not ours)."""
    return _DEFAULT.sub(lambda m: m.group(2), value)


def service_env(service: str) -> dict[str, str]:
    env = COMPOSE["services"][service]["environment"]
    return {k: interpolate(str(v)) for k, v in env.items() if v is not None}


def orchestrator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, check=False, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("service", ["conductor", "worker-metal", "worker-cloud"])
def test_every_service_command_is_a_real_subcommand(service: str) -> None:
    command = [interpolate(part) for part in COMPOSE["services"][service]["command"]]
    done = orchestrator(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: orchestrator {command[0]}")


def test_compose_file_suits_compose_1_29_and_v2() -> None:
    """1.29 rejects a top-level `name:` (v2 names the project by -p or the folder); a
    BuildKit `# syntax=` line would pull a frontend image from a registry."""
    assert "name" not in COMPOSE
    assert not DOCKERFILE.startswith("# syntax=")
    for service in APP_SERVICES:
        build = COMPOSE["services"][service]["build"]
        assert build == {"context": ".", "network": "host"}, service
    # `sleep` as PID 1 ignores SIGTERM: without an init, stop and down wait it out.
    assert COMPOSE["services"]["shell"]["init"] is True


def test_containers_setup_waits_for_other_apt_runs() -> None:
    """CI may install Chromium at the same moment: every apt-get of the setup queues on
    dpkg's lock instead of failing on it."""
    setup = (REPO / "scripts" / "containers-setup").read_text()
    code = [line for line in setup.splitlines() if not line.lstrip().startswith("#")]
    calls = [line for line in code if "apt-get" in line and "command -v" not in line]
    assert calls, "containers-setup installs nothing with apt-get"
    for line in calls:
        assert "DPkg::Lock::Timeout=" in line, line


def test_dockerfile_is_slim_multistage_non_root_and_drains() -> None:
    assert len(re.findall(r"^FROM python:3\.\d+-slim", DOCKERFILE, re.M)) == 2
    assert re.search(r"^USER orchestrator$", DOCKERFILE, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", DOCKERFILE, re.M)
    assert re.search(r'^ENTRYPOINT \["orchestrator"\]$', DOCKERFILE, re.M)
    healthcheck = re.search(r'CMD \["orchestrator", "healthcheck"\]', DOCKERFILE)
    assert healthcheck
    assert orchestrator("healthcheck", "--help").returncode == 0


def test_every_environment_variable_maps_to_a_setting() -> None:
    fields = set(Settings.model_fields)
    for service in APP_SERVICES:
        for name in COMPOSE["services"][service]["environment"]:
            assert name == "REDIS_URL" or (
                name.startswith("ORCHESTRATOR_")
                and name.removeprefix("ORCHESTRATOR_").lower() in fields
            ), f"{service}: {name} sets nothing"
    example = (REPO / ".env.example").read_text()
    for name in re.findall(r"^#?\s*([A-Z_]+)=", example, re.M):
        if name.startswith("ORCHESTRATOR_"):
            assert name.removeprefix("ORCHESTRATOR_").lower() in fields, name
        elif name != "REDIS_URL":
            assert f"${{{name}:-" in (REPO / "compose.yaml").read_text(), f"{name} is used nowhere"


def test_compose_and_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in service_env("conductor").items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.metrics_port == 9100
    example = (REPO / ".env.example").read_text()
    for name, value in re.findall(r"^(ORCHESTRATOR_\w+)=(.*)$", example, re.M):
        monkeypatch.setenv(name, value)
    assert load_settings().rules[0].pool == "cloud"


def test_rehearsal_of_the_compose_services(tmp_path: Path) -> None:
    """conductor, two metal replicas and a cloud worker, as compose runs them: a spillover
    shows in /metrics, and /healthz follows Redis going away and coming back."""
    server = RedisServer(tmp_path / "redis", port=free_port(), appendonly=True).start()
    client = redis.Redis.from_url(server.url)
    ports: dict[str, int] = {}
    processes = []
    try:
        replicas = [("conductor", 1), ("worker-metal", 2), ("worker-cloud", 1)]
        for service, count in replicas:
            command = [interpolate(part) for part in COMPOSE["services"][service]["command"]]
            if service == "worker-metal":
                command[-1] = "1"  # two replicas of one slot: metal fills at 2
            for replica in range(count):
                env = {**os.environ, **service_env(service), "PYTHONPATH": str(REPO)}
                ports[f"{service}-{replica}"] = port = free_port()
                env |= {
                    "REDIS_URL": server.url,
                    "ORCHESTRATOR_METRICS_PORT": str(port),
                    "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5",
                    "ORCHESTRATOR_MANIFESTS_DIR": str(tmp_path / "manifests"),
                    "ORCHESTRATOR_CRUD_DATABASE": str(tmp_path / "crud.db"),
                }
                log = (tmp_path / f"{service}-{replica}.log").open("wb")
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", *command], env=env, stdout=log,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
        for name, port in ports.items():
            wait_for(lambda port=port: healthcheck(port) == 0, f"{name} healthy")
        dispatch_env = {**os.environ, "REDIS_URL": server.url}
        sleepers = [{"task": "system.sleep", "args": [1.0]} for _ in range(6)]
        manifest = write_manifest(tmp_path / "rehearsal_01.jsonl", sleepers)
        done = orchestrator(
            "dispatch", str(manifest), "--backlog", "backlog:stress", env=dispatch_env
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: client.hlen("{orc}:receipts:rehearsal_01") == 6, "the batch")
        conductor = scrape(ports["conductor-0"])
        assert metric(conductor, 'orchestrator_spillovers_total{pool="cloud"}') == 4
        assert (
            metric(conductor, 'orchestrator_jobs_routed_total{pool="metal",reason="metal_free"}')
            == 2
        )
        workers = [
            ("worker-metal-0", "metal"),
            ("worker-metal-1", "metal"),
            ("worker-cloud-0", "cloud"),
        ]
        series = 'orchestrator_jobs_finished_total{{pool="{}",status="succeeded"}}'
        finished = sum(metric(scrape(ports[name]), series.format(pool)) for name, pool in workers)
        assert finished == 6

        server.kill()
        for name, port in ports.items():
            wait_for(lambda port=port: healthcheck(port) == 1, f"{name} unhealthy")
        server.start()
        for name, port in ports.items():
            wait_for(lambda port=port: healthcheck(port) == 0, f"{name} healthy again", 40)
        assert all(process.poll() is None for process in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        client.close()
        server.stop()


def healthcheck(port: int) -> int:
    return orchestrator("healthcheck", "--port", str(port)).returncode


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
