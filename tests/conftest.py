"""Shared fixtures: one private Redis server per test session, a fresh key namespace
per test (so no test ever flushes anything), and a CLI runner.

Tests never talk to a Redis they did not start: every test runs with `REDIS_URL`
pointing at a closed port unless it asks for the `redis_url` fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio
import structlog

from orchestrator import cli
from orchestrator.keys import Keys
from orchestrator.stack.record import REDIS_ORIGIN_VARIABLE
from orchestrator.stack.redis_server import RedisServer

if TYPE_CHECKING:
    from tests.live_stack import Stack

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Each test in its own working directory with no inherited settings, and with
    structlog's defaults after it: a CLI run in this process configures logging onto a
    capture stream that is closed once its test ends."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR_") and name != "ORCHESTRATOR_REDIS_SERVER":
            monkeypatch.delenv(name)
    monkeypatch.delenv(REDIS_ORIGIN_VARIABLE, raising=False)
    monkeypatch.setenv("REDIS_URL", UNREACHABLE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    structlog.reset_defaults()


@pytest.fixture
def namespace(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("ORCHESTRATOR_NAMESPACE", name)
    return name


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, namespace: str) -> str:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server.url


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def async_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run `orchestrator ARGS...` in this process and capture what a user would see."""

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


StackFactory = Callable[..., "Stack"]


@pytest.fixture
def stack(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[StackFactory]:
    """`stack(**settings)` builds a Stack of real processes; all are stopped afterwards."""
    from tests.live_stack import Stack

    made: list[Stack] = []

    def make(**settings: object) -> Stack:
        built = Stack(redis_url, namespace, tmp_path, dict(settings))
        made.append(built)
        return built

    yield make
    for built in made:
        built.stop()
