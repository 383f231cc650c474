"""`orchestrator web` as a process: how it stops, and what it says while its Redis is
gone (the server answers; Redis does not)."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.stack.redis_server import RedisServer, free_port
from tests.conftest import StackFactory
from tests.live_stack import Stack


def start_web(run: Stack) -> tuple[Any, str]:
    port = free_port()
    process = run.start("web", "--port", str(port), "--interval", "0.2")
    run.wait_for(lambda: b"dashboard:" in run.logs[process.pid].read_bytes(), "the dashboard")
    return process, f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_dashboard_with_exit_0(stack: StackFactory, stop: int) -> None:
    """SIGTERM (how `up` stops it) or Ctrl-C is a normal stop: exit 0, one line, no
    traceback — not uvicorn's re-raised signal (-15); an open page's live stream is
    ended at once, not cancelled at uvicorn's 3 s graceful timeout."""
    run = stack()
    web, url = start_web(run)
    with urllib.request.urlopen(url + "api/events", timeout=10) as page:
        assert page.readline() == b"event: status\n"  # a live page, open
        signalled = time.monotonic()
        web.send_signal(stop)
        assert web.wait(15) == 0
    assert time.monotonic() - signalled < 2.5
    text = run.logs[web.pid].read_text()
    assert len(run.events(web, "web_stopped")) == 1
    assert "Traceback" not in text


@pytest.fixture
def gone_redis(tmp_path: Path, namespace: str) -> Iterator[tuple[RedisServer, Stack]]:
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    run = Stack(server.url, namespace, tmp_path, {})
    try:
        yield server, run
    finally:
        run.stop()
        server.stop()


def test_a_dashboard_whose_redis_is_gone_says_redis_unavailable_and_why(
    gone_redis: tuple[RedisServer, Stack],
) -> None:
    """/api/status is a 503 naming Redis and the reason; the live stream stays open and
    sends `unavailable` events (the page shows "Redis unavailable", not "reconnecting")."""
    server, run = gone_redis
    web, url = start_web(run)
    with urllib.request.urlopen(url + "api/status", timeout=10) as reply:
        assert reply.status == 200
    server.stop()

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "api/status", timeout=10)
    assert refused.value.code == 503
    body = orjson.loads(refused.value.read())
    assert body["redis"] == "unavailable"
    assert "Connection refused" in body["reason"]
    assert body["error"].startswith(f"cannot reach Redis at {server.url}: ")

    events: list[dict[str, Any]] = []
    kind = b""
    with urllib.request.urlopen(url + "api/events", timeout=10) as stream:
        deadline = time.monotonic() + 10
        while len(events) < 2 and time.monotonic() < deadline:  # two: it stays open
            line = stream.readline()  # (a read made just before the stop may come first)
            assert line, "the stream ended"
            if line.startswith(b"event: "):
                kind = line
            elif line.startswith(b"data: ") and kind == b"event: unavailable\n":
                events.append(orjson.loads(line[6:]))
    assert len(events) == 2
    assert all(event["redis"] == "unavailable" and event["reason"] for event in events)
    assert web.poll() is None
    assert len(run.events(web, "redis_unavailable")) == 1
