"""A real browser on the dashboard: Playwright driving Debian's Chromium.

Playwright's own browser download is not reachable from these machines, so the tests
use `/usr/bin/chromium` (the `chromium` package; `.ci/run` installs it when missing).
Without it they are skipped with that one line, unless ORCHESTRATOR_BROWSER_REQUIRED is
set (CI sets it), where a missing browser fails them instead.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.stack.redis_server import free_port
from tests.live_stack import REPO, Stack

CHROMIUM = Path(os.environ.get("ORCHESTRATOR_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("ORCHESTRATOR_TEST_ARTIFACTS", REPO / "test-artifacts"))
TOKEN = "browser-test-token-0123456789"
# As root in a container-like machine with no network: no sandbox, no calls home.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
]  # fmt: skip


# Module scope, not session: while Playwright's sync API is open it keeps an event loop
# running in this thread, which no async test after it could then run on.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("ORCHESTRATOR_BROWSER_REQUIRED"):
            pytest.fail(f"no browser at {CHROMIUM}: apt-get install chromium")
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium to run these)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def start_web(run: Stack) -> str:
    """`orchestrator web` as users start it, on a free port; returns its URL."""
    port = free_port()
    run.env["ORCHESTRATOR_WEB_TOKEN"] = TOKEN
    process = run.start("web", "--port", str(port), "--interval", "0.5")
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url + "api/status", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    run.wait_for(answers, "the dashboard to answer")
    log = run.logs[process.pid].read_text()
    assert re.search(rf"dashboard: {re.escape(url)}", log), log
    return url


def screenshot(page: Any, name: str) -> Path:
    """Kept as a test artifact (test-artifacts/, or ORCHESTRATOR_TEST_ARTIFACTS)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
