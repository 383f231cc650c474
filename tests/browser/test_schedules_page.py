"""The dashboard's schedules page in Chromium: each schedule with its next and last tick
and outcome, run now / pause / resume behind the token, and the batches held by
`dispatch --after` with their release — the same as `orchestrator schedules` and
`orchestrator release` do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import TOKEN, screenshot, start_web
from tests.conftest import StackFactory
from tests.live_stack import write_manifest

SCHEDULE = {
    "name": "hourly-check", "workflow": "system_test", "backlog": "backlog:default",
    "args": ["--mode", "debug", "--count", "2"], "every": "1h",
}  # fmt: skip


def test_schedules_run_pause_resume_and_a_held_batch_released(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    run = stack(schedules=[SCHEDULE])
    run.worker("metal", 2)  # the held batch runs beside the one it waited for
    run.conductor()
    url = start_web(run)
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.goto(f"{url}schedules#token={TOKEN}")
    row = page.locator("[data-schedule=hourly-check]")
    expect(row).to_contain_text("system_test")
    row.get_by_role("button", name="Run now").click()
    expect(page.locator("#notice")).to_contain_text("hourly-check: dispatched", timeout=30_000)
    expect(row.locator("[data-field=outcome]")).to_contain_text("dispatched")
    batch = run.redis.hget(run.keys.schedule("hourly-check"), "last_batch")
    assert batch is not None
    run.wait_for_receipts(batch.decode(), 2)

    row.get_by_role("button", name="Pause").click()
    expect(row.locator("[data-field=next]")).to_have_text("paused")
    assert run.redis.hexists(run.keys.paused_schedules, "hourly-check")
    row.get_by_role("button", name="Resume").click()
    expect(row.locator("[data-field=next]")).not_to_have_text("paused")
    assert not run.redis.hexists(run.keys.paused_schedules, "hourly-check")

    # a batch held behind one that runs for a while, let go from the page
    run.dispatch(write_manifest(tmp_path / "first_01.jsonl", [
        {"task": "system.sleep", "args": [20]},
    ]))  # fmt: skip
    held = run.command(
        "dispatch", str(write_manifest(tmp_path / "second_01.jsonl", [
            {"task": "system.echo", "args": [1]},
        ])), "--backlog", "backlog:default", "--after", "first_01",
    )  # fmt: skip
    assert held.returncode == 0, held.stderr
    waiting = page.locator("[data-held=second_01]")
    expect(waiting).to_contain_text("first_01")
    screenshot(page, "schedules")
    waiting.get_by_role("button", name="Release").click()
    expect(page.locator("#notice")).to_contain_text("second_01: released")
    run.wait_for_receipts("second_01", 1)
    assert run.receipts("first_01") == []  # still running: the release did not wait for it
    expect(waiting).to_have_count(0)
    assert any("Run hourly-check now" in q for q in questions)
    assert any("Release second_01" in q for q in questions)
