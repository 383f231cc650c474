"""The dashboard in Chromium against a real stack: what an operator sees and does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from playwright.sync_api import expect

from tests.browser.conftest import TOKEN, screenshot, start_web
from tests.conftest import StackFactory
from tests.live_stack import write_manifest

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
XSS_ID = "<script>window.__xss=3</script>"  # ids have no spaces


def sleepers(count: int, seconds: float) -> list[dict[str, Any]]:
    return [{"task": "system.sleep", "args": [seconds]} for _ in range(count)]


def test_overview_shows_metal_full_and_cloud_taking_the_overflow(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    run = stack()
    run.worker("metal", 2)
    run.worker("cloud", 4)
    run.conductor()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "spill_01.jsonl", sleepers(5, 6)))
    page.goto(url)
    metal, cloud = page.locator("[data-pool=metal]"), page.locator("[data-pool=cloud]")
    expect(metal).to_have_attribute("data-state", "full", timeout=15_000)
    expect(metal.locator("[data-field=in_flight]")).to_have_text("2")
    expect(metal.locator("[data-field=free]")).to_have_text("0")
    expect(cloud.locator("[data-field=in_flight]")).to_have_text("3")
    expect(cloud).to_have_attribute("data-state", "spilling")
    expect(page.locator("#spill")).to_have_text("spillover: metal full, cloud runs 3")
    shot = screenshot(page, "overview-spillover")
    assert shot.stat().st_size > 10_000
    # and on a phone the same page still reads (nothing wider than the screen)
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "overview-phone")


def test_cancel_a_batch_from_its_page(stack: StackFactory, tmp_path: Path, page: Any) -> None:
    run = stack()
    run.worker("metal", 1)
    run.conductor()
    url = start_web(run)
    manifest = write_manifest(tmp_path / "doomed_01.jsonl", sleepers(8, 1))
    run.dispatch(manifest)
    page.goto(f"{url}batches/doomed_01#token={TOKEN}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel batch").click()
    expect(page.locator("#notice")).to_contain_text("cancelled", timeout=10_000)
    expect(page.locator("[data-field=state]").first).to_have_text("cancelled", timeout=10_000)
    run.wait_for(lambda: _verify(run, manifest)[0] != 3, "the batch to settle")
    code, report = _verify(run, manifest)
    assert code == 1, report
    assert report["totals"]["cancelled"] >= 6, report
    assert report["totals"]["cancelled"] + report["totals"]["done"] == 8, report


def test_requeue_a_dead_letter_from_the_page(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    run = stack(max_tries="1")
    run.worker("metal", 2)
    run.conductor()
    url = start_web(run)
    marker = tmp_path / "flaky-marker"
    run.dispatch(write_manifest(tmp_path / "flaky_01.jsonl", [
        {"task": "image.flaky", "args": [str(marker)], "id": "the-flaky-one"},
    ]))  # fmt: skip
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "the dead letter")
    page.goto(url)  # the overview counts it as `status` does: dead, not failed
    batch = page.locator("[data-batch=flaky_01]")
    expect(batch.locator("[data-field=dead]")).to_have_text("1")
    expect(batch.locator("[data-field=failed]")).to_have_text("0")
    page.goto(f"{url}dead#token={TOKEN}")
    row = page.locator("[data-ref=the-flaky-one]")
    expect(row).to_contain_text("first run fails")
    row.get_by_role("button", name="Requeue").click()
    expect(page.locator("#notice")).to_contain_text("requeued the-flaky-one")
    run.wait_for(
        lambda: [r["status"] for r in run.receipts("flaky_01")] == ["succeeded"], "its rerun"
    )
    assert run.redis.llen(run.keys.dead) == 0


def test_hostile_text_in_a_job_is_shown_as_text(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    run = stack(max_tries="1")
    run.worker("metal", 1)
    run.conductor()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "hostile_01.jsonl", [
        {"task": "image.refuse", "args": [XSS], "id": XSS_ID},
    ]))  # fmt: skip
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "the dead letter")
    for path in ("dead", "batches/hostile_01"):
        page.goto(url + path)
        expect(page.locator("main")).to_contain_text("<script>window.__xss = 1</script>")
        expect(page.locator("main")).to_contain_text(XSS_ID)
    page.goto(url + "dead")
    page.locator("main a", has_text=XSS_ID).click()
    expect(page.locator("#payload")).to_contain_text('"<script>window.__xss = 1</script>')
    expect(page.locator("#last-error")).to_contain_text("refused: <script>")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img").count() == 0


def test_an_action_without_the_token_is_refused(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    run = stack()
    url = start_web(run)
    page.goto(url)
    status = page.evaluate(
        """async () => (await fetch('/api/backlogs/default/pause', {method: 'POST'})).status"""
    )
    assert status == 403
    wrong = page.evaluate(
        """async () => (await fetch('/api/backlogs/default/pause',
            {method: 'POST', headers: {'x-orchestrator-token': 'guess'}})).status"""
    )
    assert wrong == 403
    # "Pause?" — yes; "the token?" — none given
    page.on("dialog", lambda d: d.accept() if d.type == "confirm" else d.dismiss())
    page.locator("[data-backlog='backlog:default']").get_by_role("button", name="Pause").click()
    expect(page.locator("#notice")).to_contain_text("token")
    assert not run.redis.hgetall(run.keys.paused_backlogs)


def _verify(run: Any, manifest: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "verify", str(manifest), "--json"],
        env=run.env, capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode, orjson.loads(done.stdout) if done.stdout.startswith(b"{") else {}
