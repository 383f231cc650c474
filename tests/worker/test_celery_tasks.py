"""Celery tasks, unchanged, in the replaced system's layout (`backend/tasks/<category>.py`,
`task_packages = ["backend.tasks"]`): registered under their Celery names, run by a
worker with no Celery broker, `self.request`, `self.retry`, `autoretry_for`,
`soft_time_limit` as a Celery user expects, and what needs a broker refused in one line.
The real `celery` package throughout (the `celery` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest
from tests.user_project import one_line_error, orchestrator, project_env, write_package

IMAGE = """
import os
import pathlib
import time

from celery import Celery, shared_task
from celery.exceptions import SoftTimeLimitExceeded

app = Celery("backend")


@shared_task(name="image.analyze", bind=True)
def analyze(self, path: str, threshold: float = 0.5) -> dict:
    return {
        "id": self.request.id, "retries": self.request.retries,
        "args": list(self.request.args), "kwargs": dict(self.request.kwargs),
        "pid": os.getpid(), "path": path, "threshold": threshold,
    }


@shared_task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self, marker: str) -> str:
    path = pathlib.Path(marker)
    runs = int(path.read_text()) if path.exists() else 0
    path.write_text(str(runs + 1))
    if runs < 2:
        raise self.retry(exc=RuntimeError(f"run {runs} failed"), countdown=0.2)
    return f"ok after {runs} retries"


@app.task(name="image.auto", autoretry_for=(ValueError,), max_retries=1, default_retry_delay=0.1)
def auto(marker: str) -> None:
    path = pathlib.Path(marker)
    path.write_text(path.read_text() + "x" if path.exists() else "x")
    raise ValueError("still bad")


@shared_task(name="image.broken")
def broken() -> None:
    raise KeyError("no such image")


@shared_task(name="image.soft", soft_time_limit=0.5)
def soft() -> str:
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"


@shared_task(
    name="image.backoff", autoretry_for=(OSError,), retry_backoff=1, retry_jitter=False,
    max_retries=2,
)
def backoff() -> None:
    raise OSError("disk busy")


@shared_task(name="image.limited", time_limit=1)
def limited() -> str:
    time.sleep(30)
    return "never"


@shared_task(name="image.fanout")
def fanout() -> None:
    analyze.delay("x.png")
"""


def celery_stack(stack: StackFactory, tmp_path: Path, **settings: Any) -> Stack:
    write_package(tmp_path, {"backend/tasks/image.py": IMAGE})
    run = stack(task_packages=["backend.tasks"], **settings)
    run.env["PYTHONPATH"] = project_env(tmp_path, [])["PYTHONPATH"]
    return run


def dispatch_one(tmp_path: Path, packages: list[str], task: str) -> str:
    """`orchestrator dispatch` of one line naming `task`: the one line it refuses with."""
    manifest = write_manifest(tmp_path / "m_01.jsonl", [{"task": task, "args": ["a"]}])
    env = project_env(tmp_path, packages)
    return one_line_error(
        orchestrator(env, tmp_path, "dispatch", str(manifest), "--backlog", "b:x")
    )


def by_id(run: Stack, batch: str, count: int) -> dict[str, dict[str, Any]]:
    return {r["job_id"]: r for r in run.wait_for_receipts(batch, count)}


def test_celery_tasks_run_under_their_celery_names_with_self_request(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = celery_stack(stack, tmp_path)
    worker = run.worker("metal", 2)
    run.conductor()
    manifest = write_manifest(
        tmp_path / "celery_01.jsonl",
        [{"task": "image.analyze", "args": ["a.png"], "kwargs": {"threshold": 0.9}}],
    )
    run.dispatch(manifest)
    (receipt,) = by_id(run, "celery_01", 1).values()
    assert receipt["status"] == "succeeded"
    result = receipt["result"]
    assert result["id"] == "celery_01:1"  # self.request.id is the job's id
    assert result["retries"] == 0
    assert result["args"] == ["a.png"]
    assert result["kwargs"] == {"threshold": 0.9}
    assert result["pid"] != worker.pid  # a sync task: in a child process
    started = run.events(worker, "worker_started")[0]
    assert "backend.tasks.image.flaky" in started["tasks"]  # Celery's default name


def test_self_retry_and_autoretry_for_are_this_projects_retries(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = celery_stack(stack, tmp_path, max_tries=1)  # Celery's max_retries decide
    worker = run.worker("metal", 2)
    run.conductor()
    flaky, auto = tmp_path / "flaky.marker", tmp_path / "auto.marker"
    manifest = [
        {"task": "backend.tasks.image.flaky", "args": [str(flaky)]},
        {"task": "image.auto", "args": [str(auto)]},
        {"task": "image.broken", "args": []},
    ]
    run.dispatch(write_manifest(tmp_path / "retry_01.jsonl", manifest))
    receipts = by_id(run, "retry_01", 3)
    assert receipts["retry_01:1"]["status"] == "succeeded"
    assert receipts["retry_01:1"]["result"] == "ok after 2 retries"
    assert receipts["retry_01:1"]["attempt"] == 3
    # autoretry_for with max_retries=1: two runs, then its own exception
    assert receipts["retry_01:2"]["status"] == "failed"
    assert receipts["retry_01:2"]["error"] == "ValueError: still bad"
    assert auto.read_text() == "xx"
    # a plain exception fails a Celery task at once, as in Celery
    assert receipts["retry_01:3"]["status"] == "failed"
    assert receipts["retry_01:3"]["attempt"] == 1
    assert receipts["retry_01:3"]["error"] == "KeyError: 'no such image'"
    asked = [e for e in run.events(worker, "job_retrying") if e.get("asked")]
    assert {e["job_id"] for e in asked} == {"retry_01:1", "retry_01:2"}
    assert {e["delay"] for e in asked if e["job_id"] == "retry_01:1"} == {0.2}


def test_soft_time_limit_raises_inside_the_task_and_delay_is_refused_in_one_line(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = celery_stack(stack, tmp_path, max_tries=1)
    run.worker("metal", 2)
    run.conductor()
    manifest = [{"task": "image.soft", "args": []}, {"task": "image.fanout", "args": []}]
    run.dispatch(write_manifest(tmp_path / "limits_01.jsonl", manifest))
    receipts = by_id(run, "limits_01", 2)
    assert receipts["limits_01:1"]["status"] == "succeeded"
    assert receipts["limits_01:1"]["result"] == "cleaned up"
    assert receipts["limits_01:2"]["status"] == "failed"
    error = receipts["limits_01:2"]["error"]
    assert error.startswith("CeleryUnsupported: task.delay() / task.apply_async() needs a")
    assert "\n" not in error


def test_without_celery_a_celery_module_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    write_package(tmp_path, {"backend/tasks/image.py": IMAGE})
    (tmp_path / "celery.py").write_text("raise ModuleNotFoundError(name='celery')\n")
    line = dispatch_one(tmp_path, ["backend.tasks"], "image.analyze")
    assert "task module backend.tasks.image uses Celery, which is not installed" in line
    assert "pip install -e '.[celery]'" in line


def test_a_celery_name_that_is_no_task_name_is_refused_with_one_to_give(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {"jobs/video.py": "from celery import shared_task\n"
         "@shared_task(name='Video-Encode')\ndef encode(path): ...\n"},
    )  # fmt: skip
    line = dispatch_one(tmp_path, ["jobs"], "video.encode")
    assert "Celery task 'Video-Encode' in jobs.video" in line
    assert "@shared_task(name='video.video_encode')" in line


def test_retry_backoff_delays_grow_and_time_limit_is_the_jobs_timeout(
    stack: StackFactory, tmp_path: Path
) -> None:
    run = celery_stack(stack, tmp_path, max_tries=1)
    worker = run.worker("metal", 2)
    run.conductor()
    manifest = [{"task": "image.backoff", "args": []}, {"task": "image.limited", "args": []}]
    run.dispatch(write_manifest(tmp_path / "slow_01.jsonl", manifest))
    receipts = by_id(run, "slow_01", 2)
    assert receipts["slow_01:1"]["status"] == "failed"
    assert receipts["slow_01:1"]["attempt"] == 3  # max_retries=2: three runs
    assert receipts["slow_01:1"]["error"] == "OSError: disk busy"
    delays = [e["delay"] for e in run.events(worker, "job_retrying") if e["job_id"] == "slow_01:1"]
    assert delays == [1, 2]  # retry_backoff=1, no jitter: 1 s, then 2 s
    assert receipts["slow_01:2"]["status"] == "failed"
    assert receipts["slow_01:2"]["error"].startswith("TimeoutError")
    assert receipts["slow_01:2"]["duration"] < 10  # stopped at its time_limit, not after 30 s
