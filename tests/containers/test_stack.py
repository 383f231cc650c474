"""The image and the compose stack, for real: built, brought up, loaded, scaled,
drained, and Redis killed under it — each claim of the README's "Run as containers"
checked on real containers, from what they leave behind (receipts, `verify`'s exit
code, Docker's health status, the processes' user), never from timing alone.

Sleepers here last 8 to 22 s rather than the 90 to 150 s of a real stress batch: long
enough to fill every slot while a test acts on the stack, short enough that the suite
stays within minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.stack.redis_server import free_port
from tests.containers import harness
from tests.containers.conftest import FIGURES, StackFactory
from tests.containers.harness import APP_SERVICES, APP_UID, Stack, batch_of, overlapping, wait_for
from tests.dashboard_action import assert_action_needs_the_token

METAL_SLOTS = 2 * 4  # worker-metal: 2 replicas x METAL_CONCURRENCY (4), compose.yaml's defaults
CLOUD_SLOTS = 8  # worker-cloud: 1 replica x CLOUD_CONCURRENCY (8)

pytestmark = pytest.mark.containers


def pool_of(stack: Stack, name: str) -> dict[str, Any]:
    pools: list[dict[str, Any]] = stack.status()["pools"]
    return next(pool for pool in pools if pool["name"] == name)


def running_in(stack: Stack, pool: str) -> int:
    return int(pool_of(stack, pool)["running"])


def test_image_is_non_root_drains_and_checks_its_health(image: str) -> None:
    """What every service inherits from the Dockerfile."""
    config = harness.inspect(image)[0]["Config"]
    assert config["User"] == "orchestrator"
    assert config["Entrypoint"] == ["orchestrator"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"] == ["CMD", "orchestrator", "healthcheck"]
    version = harness.run([harness.docker_binary(), "run", "--rm", image, "--version"])
    assert version.stdout.startswith("orchestrator ")
    # Cached: only a change in the package sources rebuilds more than the last layers.
    FIGURES["build (cached)"] = f"{harness.build_image():.1f} s"


def test_readme_walkthrough_spills_metal_first_then_cloud(make_stack: StackFactory) -> None:
    """The README's block, line by line: setup, build, up, plan, dispatch, status, scale,
    verify. Every service turns healthy and runs as the image's user, metal fills before
    cloud runs anything, and `verify` exits 0 (it does only when every job succeeded)."""
    stack = make_stack()
    commands = harness.readme_commands()
    manifest = ""
    for command in commands:
        if command.endswith(" down --volumes"):
            continue  # the fixture's teardown runs it (and must, even after a failure)
        started = time.monotonic()
        stack.readme(command)  # any non-zero exit fails the test
        if command.endswith(" up -d"):
            seconds = time.monotonic() - started + stack.wait_healthy(["redis", *APP_SERVICES])
            FIGURES["up to all healthy"] = f"{seconds:.1f} s"
            assert_non_root(stack)
        if found := re.search(r"(manifests/\S+\.jsonl)", command):
            manifest = found[1]
    assert manifest, commands
    assert any(" verify " in command for command in commands), commands
    receipts = list(stack.receipts(batch_of(manifest)).values())
    planned = stack.shell("wc", "-l", manifest).stdout.split()[0]
    assert len(receipts) == int(planned)
    assert {r["status"] for r in receipts} == {"succeeded"}
    metal = [r for r in receipts if r["pool"] == "metal"]
    cloud = [r for r in receipts if r["pool"] == "cloud"]
    assert len(metal) >= METAL_SLOTS, receipts
    assert cloud, receipts
    # The conductor's decisions, in order: metal's slots first, cloud only as overflow.
    routed = [
        json.loads(line.split("|", 1)[-1])
        for line in stack.compose("logs", "--no-color", "conductor").stdout.splitlines()
        if '"routed"' in line
    ]
    assert len(routed) == len(receipts), routed
    assert [e["pool"] for e in routed[:METAL_SLOTS]] == ["metal"] * METAL_SLOTS, routed
    assert {e["reason"] for e in routed if e["pool"] == "cloud"} == {"metal_full_spill"}
    # Metal was full when cloud started its first job (forwarded together: 1 s of slack).
    first_cloud = min(r["started_at"] for r in cloud)
    assert overlapping(metal, first_cloud, slack=1.0) == METAL_SLOTS, receipts


def assert_non_root(stack: Stack) -> None:
    """Every process of every app container runs as the image's user (uid on the host)."""
    for service in APP_SERVICES:
        for container in stack.containers(service):
            top = harness.run([harness.docker_binary(), "top", container, "-eo", "uid,pid,args"])
            uids = {line.split()[0] for line in top.stdout.splitlines()[1:]}
            assert uids == {str(APP_UID)}, f"{service}: {top.stdout}"


def test_scaling_cloud_adds_capacity_without_a_restart(make_stack: StackFactory) -> None:
    """`up -d --scale worker-cloud=3` mid-batch: the conductor, never restarted, routes
    to the new workers as soon as they announce their slots."""
    stack = make_stack()
    stack.up()
    conductor = harness.inspect(*stack.containers("conductor"))[0]
    manifest = stack.plan(40, 10, 12)
    stack.dispatch(manifest)
    wait_for(lambda: running_in(stack, "cloud") == CLOUD_SLOTS, "cloud full", 60)
    stack.compose("up", "-d", "--scale", "worker-cloud=3")
    assert len(stack.containers("worker-cloud")) == 3
    done = stack.verify(manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    cloud = [r for r in stack.receipts(batch_of(manifest)).values() if r["pool"] == "cloud"]
    assert len({r["worker"] for r in cloud}) >= 2, cloud
    assert max(overlapping(cloud, r["started_at"]) for r in cloud) > CLOUD_SLOTS
    after = harness.inspect(conductor["Id"])[0]
    assert after["State"]["StartedAt"] == conductor["State"]["StartedAt"]
    assert after["RestartCount"] == 0


def test_stopping_metal_drains_running_jobs(make_stack: StackFactory) -> None:
    """`stop worker-metal` mid-batch returns once the running jobs finished (well within
    stop_grace_period: exit 0, not killed), and the rest of the batch runs on cloud."""
    stack = make_stack()
    stack.up()
    manifest = stack.plan(20, 8, 10)
    stack.dispatch(manifest)
    wait_for(lambda: running_in(stack, "metal") == METAL_SLOTS, "metal full", 60)
    started, stop_at = time.monotonic(), time.time()  # containers share the host's clock
    stack.compose("stop", "worker-metal", timeout=120)
    stopped_in = time.monotonic() - started
    assert stopped_in < 45, f"stop took {stopped_in:.0f} s: killed at stop_grace_period?"
    stopped = harness.inspect(*stack.containers("worker-metal", stopped=True))
    assert [c["State"]["Status"] for c in stopped] == ["exited", "exited"], stopped
    for container in stopped:
        assert container["State"]["ExitCode"] == 0, container["State"]
    done = stack.verify(manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    receipts = list(stack.receipts(batch_of(manifest)).values())
    assert len(receipts) == 20
    assert {r["status"] for r in receipts} == {"succeeded"}
    metal = [r for r in receipts if r["pool"] == "metal"]
    # Every slot was running a job when `stop` began, and each finished there, once.
    assert overlapping(metal, stop_at) == METAL_SLOTS, metal
    assert {r["attempt"] for r in metal} == {1}, metal


def test_redis_killed_and_started_loses_nothing(make_stack: StackFactory) -> None:
    """Kill Redis with jobs queued, running and done: health turns unhealthy while it is
    down and healthy after; its append-only file keeps every job; conductor and workers
    reconnect by themselves and the whole batch succeeds."""
    stack = make_stack()
    stack.up()
    manifest = stack.plan(30, 8, 10)
    stack.dispatch(manifest)
    wait_for(lambda: running_in(stack, "cloud") == CLOUD_SLOTS, "metal and cloud full", 60)
    # SIGKILL: Redis writes what it acknowledges to the append-only file before it
    # replies (appendfsync everysec only delays the fsync, and the kernel keeps the
    # unsynced pages of a killed process), so the kill may lose nothing of the batch.
    stack.compose("kill", "redis")
    for service in APP_SERVICES:  # /healthz at once, Docker's status after its retries
        wait_for(lambda s=service: stack.probe(s) == {1}, f"{service}: /healthz 503", 30)
    wait_for(lambda: "unhealthy" in stack.health("conductor"), "conductor unhealthy", 60)
    stack.compose("start", "redis")
    for service in APP_SERVICES:
        wait_for(lambda s=service: stack.probe(s) == {0}, f"{service}: /healthz 200", 60)
    stack.wait_healthy(["redis", *APP_SERVICES], timeout=90)
    done = stack.verify(manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    receipts = stack.receipts(batch_of(manifest))
    assert len(receipts) == 30
    assert {r["status"] for r in receipts.values()} == {"succeeded"}
    # The outage is no job's failure: a job cut short by it runs again as the same try
    # (the append-only file may lose the last second, so one more at most), never on
    # two workers at once nor until its tries run out.
    assert max(r["attempt"] for r in receipts.values()) <= 2, receipts
    for service in APP_SERVICES:
        for container in harness.inspect(*stack.containers(service)):
            assert container["RestartCount"] == 0, f"{service} restarted instead of reconnecting"


ELASTIC = Path(__file__).with_name("compose.elastic.yaml")


def test_elastic_cloud_scales_worker_cloud_through_compose(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """The `command` provider for real: a conductor whose cloud pool starts empty runs
    `docker-compose … up -d --scale worker-cloud={target}` when metal is full, the new
    containers take the overflow, and once idle they are released down to none."""
    stack = make_stack(extra_files=(ELASTIC,), CLOUD_CONCURRENCY="4")
    stack.compose("up", "-d", "--scale", "worker-cloud=0", "--scale", "conductor=0")
    stack.wait_healthy(["redis", "worker-metal"])
    port = stack.compose("port", "redis", "6379").stdout.strip().rsplit(":", 1)[1]
    scale = (
        shlex.join(stack.argv("up", "-d", "--no-deps", "--no-recreate"))
        + " --scale worker-cloud={target} worker-cloud"
    )
    # A file, not ORCHESTRATOR_* variables: the launch command runs in the conductor's
    # environment, and compose would pass those on to the workers it starts.
    config = tmp_path / "orchestrator.toml"
    config.write_text(
        '[[pools]]\nname = "metal"\norder = 0\n\n[[pools]]\nname = "cloud"\norder = 1\n\n'
        f'[pools.scaler]\nprovider = "command"\nlaunch = {json.dumps(scale)}\n'
        f"release = {json.dumps(scale)}\nmax_workers = 2\nslots_per_worker = 4\n"
        "scale_up_after = 1\nidle_release_after = 5\nboot_timeout = 90\n"
    )
    env = harness.clean_env(
        ORCHESTRATOR_LOG_FORMAT="json",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    log = (tmp_path / "conductor.log").open("w")
    conductor = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "conductor", "--config", str(config),
         "--redis-url", f"redis://127.0.0.1:{port}/0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        manifest = stack.plan(24, 20, 22)  # metal busy while cloud containers boot
        stack.dispatch(manifest)
        wait_for(lambda: len(stack.containers("worker-cloud")) == 2, "2 cloud workers launched", 90)
        done = stack.verify(manifest)
        assert done.returncode == 0, done.stdout + done.stderr
        cloud = [r for r in stack.receipts(batch_of(manifest)).values() if r["pool"] == "cloud"]
        assert len({r["worker"] for r in cloud}) == 2, cloud
        wait_for(lambda: not stack.containers("worker-cloud"), "cloud released to none", 90)
    finally:
        conductor.terminate()
        conductor.wait(30)
        log.close()
        print((tmp_path / "conductor.log").read_text()[-5000:])
    events = [
        json.loads(line)
        for line in (tmp_path / "conductor.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(e["event"] == "scale_up" for e in events)
    assert any(e["event"] == "scale_down" for e in events)
    assert not any(e["event"] == "launch_failed" for e in events)


def test_the_dashboard_serves_the_host_and_its_buttons_need_the_token(
    make_stack: StackFactory,
) -> None:
    """The `web` profile: not started by `up -d`; started with a token, it turns healthy
    (its /healthz), serves the overview on the host's loopback, and refuses an action
    without the token while taking one with it."""
    port = free_port()
    token = secrets.token_hex(16)
    stack = make_stack(ORCHESTRATOR_WEB_TOKEN=token, WEB_PORT=str(port))
    stack.up()
    web = ["--profile", "web"]
    assert not stack.compose(*web, "ps", "-q", "web").stdout.split()  # not part of `up -d`
    try:
        stack.compose(*web, "up", "-d", "web")
        ids = stack.compose(*web, "ps", "-q", "web").stdout.split()
        assert len(ids) == 1

        def healthy() -> bool:
            return bool(
                harness.inspect(*ids)[0]["State"].get("Health", {}).get("Status") == "healthy"
            )

        wait_for(healthy, "web healthy", timeout=90, every=1)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/api/status", timeout=10) as answer:
            status = json.load(answer)
        assert [pool["name"] for pool in status["pools"]] == ["metal", "cloud"]
        assert_action_needs_the_token(f"{base}/api/backlogs/stress/pause", token)
        paused = {b["name"]: b for b in stack.status()["backlogs"]}["backlog:stress"]
        assert paused["paused_at"] is not None
    finally:
        stack.compose(*web, "rm", "-fs", "web", check=False)
