"""`orchestrator web` as a process: how it stops."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from orchestrator.stack.redis_server import free_port
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
    traceback — not uvicorn's re-raised signal (-15)."""
    run = stack()
    web, _ = start_web(run)
    web.send_signal(stop)
    assert web.wait(15) == 0
    text = run.logs[web.pid].read_text()
    assert len(run.events(web, "web_stopped")) == 1
    assert "Traceback" not in text
