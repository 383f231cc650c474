"""Registering Celery tasks changes nothing for code that is not a job of ours: a
process that also uses a real Celery (an app moving its tasks over) keeps `.delay()`
and `retry()`; inside a job, `.delay()` is refused in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.celery_tasks import CeleryUnsupported
from orchestrator.job_context import JobContext, serving
from orchestrator.registry import TaskRegistry


def test_delay_is_celerys_own_outside_a_job_and_refused_inside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "movingtasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "image.py").write_text(
        "from celery import shared_task\n"
        "@shared_task(name='image.double')\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("moving", set_as_current=True)
    app.conf.task_always_eager = True  # Celery runs .delay() here, with no broker
    registry = TaskRegistry.discover("movingtasks")
    assert set(registry) == {"image.double"}
    task = app.tasks["image.double"]
    assert task.delay(21).get() == 42  # not a job of ours: Celery's own .delay()
    with serving(JobContext("j:1", "j", 1)), pytest.raises(CeleryUnsupported, match="broker"):
        task.delay(21)
    assert registry["image.double"].function(4) == 8
    sys.modules.pop("movingtasks.image", None)
