"""The overview in Chromium while its Redis is frozen (SIGSTOP: connections stay open,
nothing comes back), then after the dashboard's own server stops: the page says which
of the two it is."""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import expect

from orchestrator.stack.redis_server import RedisServer, free_port
from tests.browser.conftest import start_web
from tests.live_stack import Stack

# It freezes a Redis of its own (never the session's) for a few seconds.
pytestmark = pytest.mark.chaos


def test_the_page_says_redis_unavailable_not_reconnecting_while_redis_is_frozen(
    tmp_path: Path, namespace: str, page: Any
) -> None:
    """Frozen Redis: "Redis unavailable: Timeout reading …" (the server answers), /api/status
    a 503 saying so; thawed: "live" again; the dashboard stopped: "reconnecting…"."""
    with RedisServer(tmp_path / "redis", port=free_port()) as server:
        assert server.pid is not None
        run = Stack(server.url, namespace, tmp_path, {})
        try:
            url = start_web(run)
            page.goto(url)
            live = page.locator("#live")
            expect(live).to_have_text("live", timeout=10_000)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                expect(live).to_have_text(
                    re.compile(r"^Redis unavailable: Timeout reading from 127\.0\.0\.1:"),
                    timeout=15_000,
                )
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(url + "api/status", timeout=15)
                assert refused.value.code == 503
                assert orjson.loads(refused.value.read())["redis"] == "unavailable"
            finally:
                os.kill(server.pid, signal.SIGCONT)
            expect(live).to_have_text("live", timeout=15_000)
            run.stop()  # the dashboard's server: only now is the page reconnecting
            expect(live).to_have_text("reconnecting…", timeout=10_000)
        finally:
            os.kill(server.pid, signal.SIGCONT)
            run.stop()
