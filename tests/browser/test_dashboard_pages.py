"""The dashboard's second hour in Chromium against a real stack: history charts, a page
per job, the queues, bulk actions on dead letters, the workers, relative times."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio
from playwright.sync_api import expect

from orchestrator import history
from orchestrator.keys import Keys
from tests.browser.conftest import TOKEN, screenshot, start_web
from tests.conftest import StackFactory
from tests.live_stack import REPO, Stack, write_manifest

# The README's picture of the history charts: rewritten by the test only when asked
# (ORCHESTRATOR_UPDATE_DOCS=1), so that a test run leaves the checkout as it found it.
DOCS_SHOT = REPO / "docs" / "img" / "dashboard-history.png"
UPDATE_DOCS = os.environ.get("ORCHESTRATOR_UPDATE_DOCS") == "1"


def echoes(count: int) -> list[dict[str, Any]]:
    return [{"task": "system.echo", "args": [i]} for i in range(count)]


def _in_a_thread(work: Any) -> None:
    """Run a coroutine on a loop of its own: Playwright's sync API holds this thread's."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work)
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _earlier_hour(run: Stack) -> None:
    """An hour of history before the test's own batch, written by the same writers the
    worker, conductor and scaler use (`history.py`), so the charts have a past."""

    async def write() -> None:
        client = redis.asyncio.Redis.from_url(run.url)
        keys: Keys = run.keys
        now = time.time()
        try:
            for minute in range(60, 0, -1):
                at = now - minute * 60
                wave = max(0, round(6 + 5 * math.sin(minute / 6) + 3 * math.sin(minute / 2.3)))
                async with client.pipeline(transaction=True) as pipe:
                    for _ in range(3 * wave):
                        history.stage_outcome(pipe, keys, "metal", True, at)
                    for _ in range(wave if minute < 40 else 0):
                        history.stage_outcome(pipe, keys, "cloud", True, at)
                    if minute % 7 == 0:
                        history.stage_outcome(pipe, keys, "metal", False, at)
                    if minute < 40:
                        history.stage_spend(pipe, keys, "cloud", 0.0004 * wave, at)
                    await pipe.execute()
                depth = round(max(0.0, 420 * math.sin(math.pi * (60 - minute) / 45)))
                await history.note_depths(client, keys, {"backlog:default": depth}, at)
        finally:
            await client.aclose()

    _in_a_thread(write())


def test_history_charts_on_the_overview(stack: StackFactory, tmp_path: Path, page: Any) -> None:
    """Throughput per pool, backlog depth and spend are charted from /api/history; the
    real batch run here is counted in the minutes its jobs ended. The screenshot is the
    README's (written there with ORCHESTRATOR_UPDATE_DOCS=1)."""
    run = stack(max_tries="1")
    run.worker("metal", 4)
    run.conductor()
    url = start_web(run)
    _earlier_hour(run)
    run.dispatch(write_manifest(tmp_path / "hist_01.jsonl", [
        *echoes(12), {"task": "image.refuse", "args": ["no"], "id": "hist-refused"},
    ]))  # fmt: skip
    run.wait_for(lambda: run.redis.hlen(run.keys.receipts("hist_01")) == 13, "the batch")
    # the conductor's heartbeat notes the backlog's depth in the current minute
    run.wait_for(
        lambda: bool(
            run.redis.hexists(
                run.keys.history(history.bucket_of(time.time())), "depth:backlog:default"
            )
        ),
        "the conductor's depth sample",
    )
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(url)
    charts = page.locator("#history-charts")
    throughput = charts.locator("[data-chart=throughput]")
    expect(throughput.locator("path[data-series='metal succeeded']")).to_have_count(1)
    expect(throughput.locator("path[data-series='metal failed']")).to_have_count(1)
    expect(throughput.locator("path[data-series='cloud succeeded']")).to_have_count(1)
    expect(charts.locator("[data-chart=depth] path[data-series='backlog:default']")).to_have_count(
        1
    )
    expect(charts.locator("[data-chart=spend] path[data-series=cloud]")).to_have_count(1)
    api = page.evaluate("async () => (await fetch('/api/history')).json()")
    # Counted in the minutes its jobs ended (the batch may end in the minute before the
    # page asks, or straddle two): none of them a minute the earlier hour wrote.
    points = {point["at"]: point for point in api["points"]}
    ended: Counter[tuple[int, str]] = Counter(
        (history.bucket_of(receipt["ended_at"]) * history.BUCKET_SECONDS, receipt["status"])
        for receipt in map(json.loads, run.redis.hvals(run.keys.receipts("hist_01")))
    )
    assert sum(ended.values()) == 13
    assert {status for _, status in ended} == {"succeeded", "failed"}
    for (at, status), count in ended.items():
        assert points[at][status]["metal"] == count, points[at]
    total = api["totals"]["succeeded"]["metal"]
    expect(throughput.locator(".key[data-series='metal succeeded'] b")).to_have_text(f" {total}")
    page.select_option("#history-range", "1440")
    expect(throughput.locator("svg")).to_have_count(1)
    page.select_option("#history-range", "60")
    shot = DOCS_SHOT if UPDATE_DOCS else tmp_path / DOCS_SHOT.name
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#history").scroll_into_view_if_needed()
    section = page.locator("section", has=page.locator("#history"))
    section.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    screenshot(page, "overview-history")


def test_a_job_page_from_the_batch_the_dead_letters_and_the_search(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    """Each way to a job leads to its page: task, arguments, result or error, runs;
    times read as "3 s ago"; the batch page's per-task table fits 1400 px."""
    run = stack(max_tries="1")
    run.worker("metal", 2)
    run.conductor()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "jobs_01.jsonl", [
        {"task": "system.echo", "args": ["hello"]},
        {"task": "image.refuse", "args": ["nope"], "id": "refused-one"},
        # a long task name (its database is not there: it fails, dead-lettered)
        {"task": "bible.drop_duplicate_edges", "args": [1], "kwargs": {
            "source": "a", "relation": "r", "target": "b", "gap_id": "g",
            "database": str(tmp_path / "no" / "such.db"),
        }},
    ]))  # fmt: skip
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 2, "the dead letters")
    run.wait_for(lambda: run.redis.hlen(run.keys.receipts("jobs_01")) == 3, "the receipts")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(url + "batches/jobs_01")
    # the per-task table (a row per task, a column per state) fits 1400 px: no scrollbar
    expect(page.locator("#per-task tbody tr")).to_have_count(3)
    overflowing = page.evaluate(
        "[...document.querySelectorAll('.scroll')]"
        ".filter(e => e.scrollWidth > e.clientWidth).length"
    )
    assert overflowing == 0
    page.locator("[data-job='jobs_01:1'] a").click()
    expect(page.locator("#job-title")).to_have_text("jobs_01:1")
    expect(page.locator("[data-field=state]")).to_have_text("succeeded")
    expect(page.locator("#job-result")).to_contain_text('"hello"')
    expect(page.locator("[data-attempt='1']")).to_contain_text("metal")
    # relative times, the exact one on hover
    started = page.locator("[data-attempt='1'] time").first
    expect(started).to_have_text(re.compile(r"^(now|\d+ s ago)$"))
    assert started.get_attribute("title").endswith(" UTC")
    page.goto(url + "dead")
    page.locator("[data-ref=refused-one]").get_by_role("link", name="job →").click()
    expect(page.locator("#job-title")).to_have_text("refused-one")
    expect(page.locator("[data-field=state]")).to_have_text("dead lettered")
    expect(page.locator("#job-error")).to_contain_text("refused")
    expect(page.locator("#job-args")).to_contain_text('"nope"')
    expect(page.locator("main")).to_contain_text("Dead letters")
    screenshot(page, "job-dead-lettered")
    page.fill("#top-job-id", "jobs_01:1")
    page.press("#top-job-id", "Enter")
    expect(page).to_have_url(re.compile(r"/jobs/jobs_01%3A1$"))
    expect(page.locator("[data-field=task]")).to_have_text("system.echo")


def test_a_batch_page_lists_pending_jobs_paginated_and_filtered(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    """Jobs nothing took yet are listed where they wait; pages of 100; a state filter."""
    run = stack()
    url = start_web(run)  # no conductor: every job waits in the backlog
    run.dispatch(write_manifest(tmp_path / "many_01.jsonl", [
        *echoes(140), *({"task": "system.sleep", "args": [0]} for _ in range(10)),
    ]))  # fmt: skip
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(url + "batches/many_01")
    expect(page.locator(".pager span")).to_have_text("1\N{EN DASH}100 of 150")
    expect(page.locator("[data-job='many_01:1']")).to_contain_text("waits in backlog:default")
    page.get_by_role("button", name="next →").click()
    expect(page.locator(".pager span")).to_have_text("101\N{EN DASH}150 of 150")
    page.select_option("#state-filter", "succeeded")
    expect(page.locator(".pager span")).to_have_text("no jobs")
    page.select_option("#state-filter", "pending")
    expect(page.locator(".pager span")).to_have_text("1\N{EN DASH}100 of 150")


def test_the_queues_page_shows_the_first_waiting_jobs(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    """The head of each backlog and pool queue, linked to each job's page."""
    run = stack()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "queued_01.jsonl", echoes(25)))
    page.goto(url + "queues")
    backlog = page.locator("[data-place='backlog:default']")
    expect(backlog.locator("h2")).to_have_text("backlog:default — 25 jobs")
    expect(backlog.locator("tbody tr")).to_have_count(10)
    expect(page.locator("[data-place='queue:metal'] h2")).to_have_text("queue:metal — 0 jobs")
    screenshot(page, "queues")
    backlog.get_by_role("link", name="queued_01:1", exact=True).click()
    expect(page.locator("[data-field=state]")).to_have_text("pending")


def test_bulk_requeue_and_purge_of_dead_letters(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    """Requeue every dead letter of a batch (they run again), then purge the rest —
    each after a confirm, with the token."""
    run = stack(max_tries="1")
    run.worker("metal", 4)
    run.conductor()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "flaky_02.jsonl", [
        {"task": "image.flaky", "args": [str(tmp_path / f"m{i}")]} for i in range(3)
    ]))  # fmt: skip
    run.dispatch(write_manifest(tmp_path / "refused_02.jsonl", [
        {"task": "image.refuse", "args": [f"no {i}"]} for i in range(2)
    ]))  # fmt: skip
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 5, "five dead letters")
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.goto(f"{url}dead#token={TOKEN}")
    page.select_option("#bulk-batch", "flaky_02")
    screenshot(page, "dead-letters-bulk")
    page.get_by_role("button", name="Requeue all matching").click()
    expect(page.locator("#notice")).to_contain_text("requeued 3 of 3 dead letters (batch flaky_02)")
    assert questions[-1].startswith("Requeue every dead letter of batch flaky_02?")
    run.wait_for(
        lambda: [r["status"] for r in run.receipts("flaky_02")] == ["succeeded"] * 3, "reruns"
    )
    page.select_option("#bulk-batch", "")
    expect(page.locator("[data-ref]")).to_have_count(2)
    page.get_by_role("button", name="Purge all matching").click()
    expect(page.locator("#notice")).to_contain_text("purged 2 dead letters")
    assert questions[-1].startswith("Delete every dead letter?")
    assert run.redis.llen(run.keys.dead) == 0


def test_workers_stay_open_and_say_what_they_run(
    stack: StackFactory, tmp_path: Path, page: Any
) -> None:
    """The overview's worker list stays open across refreshes and reloads; the workers
    page lists each worker's running jobs and its last beat."""
    run = stack()
    run.worker("metal", 2)
    run.conductor()
    url = start_web(run)
    run.dispatch(write_manifest(tmp_path / "busy_01.jsonl", [
        {"task": "system.sleep", "args": [20]} for _ in range(2)
    ]))  # fmt: skip
    run.wait_running("busy_01", 2)
    page.goto(url)
    workers = page.locator("details[data-workers=metal]")
    workers.locator("summary").click()
    expect(workers).to_have_attribute("open", "")
    page.wait_for_timeout(2_000)  # four refreshes redraw the page
    expect(workers).to_have_attribute("open", "")
    expect(workers.locator("tbody tr")).to_have_count(1)
    page.reload()
    expect(page.locator("details[data-workers=metal]")).to_have_attribute("open", "")
    page.get_by_role("link", name="Workers", exact=True).click()
    row = page.locator("[data-pool=metal] [data-worker]")
    expect(row).to_have_count(1)
    expect(row.locator("td.jobs a")).to_have_count(2)
    expect(row.locator("td.jobs")).to_contain_text("busy_01:1")
    screenshot(page, "workers")
    expect(row.locator("time")).to_have_text(re.compile(r"^(now|\d+ s ago)$"))
