"""Registering Celery tasks changes nothing for code that is not a job of ours: a
process that also uses a real Celery (an app moving its tasks over) keeps `.delay()`
and `retry()`; inside a job, `.delay()` is refused in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.celery_tasks import CeleryUnsupported
from orchestrator.job_context import JobContext, serving
from orchestrator.registry import TaskRegistry


def celery_package(
    root: Path, monkeypatch: pytest.MonkeyPatch, package: str, module: str, tasks: str
) -> None:
    """A package `package` under `root`, importable, whose `module` holds Celery's
    `tasks` (its import of `shared_task` given)."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    (root / package / f"{module}.py").write_text("from celery import shared_task\n" + tasks)
    monkeypatch.syspath_prepend(str(root))


def test_delay_is_celerys_own_outside_a_job_and_refused_inside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    celery_package(
        tmp_path, monkeypatch, "movingtasks", "image",
        "@shared_task(name='image.double')\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n",
    )  # fmt: skip
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


def test_canvas_and_send_task_inside_a_job_are_refused_in_one_line_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chains, groups, chords, maps, chunks, a signature's `.delay()` and `send_task`
    would reach for a broker: inside a job each is one line naming it; outside, Celery's."""
    from celery import chain, chord, group

    celery_package(
        tmp_path, monkeypatch, "canvastasks", "maths",
        "@shared_task(name='maths.add')\n"
        "def add(x: int, y: int = 0) -> int:\n"
        "    return x + y\n"
        "@shared_task(name='maths.total')\n"
        "def total(values: list[int]) -> int:\n"
        "    return sum(values)\n",
    )  # fmt: skip
    app = Celery("canvas", set_as_current=True)
    app.conf.task_always_eager = True
    registry = TaskRegistry.discover("canvastasks")
    assert set(registry) == {"maths.add", "maths.total"}
    add, total = app.tasks["maths.add"], app.tasks["maths.total"]
    calls: dict[str, Callable[[], object]] = {
        "canvas (chain)": lambda: chain(add.s(1, 2), add.s(3)).apply_async(),
        "canvas (group)": lambda: group(add.s(1), add.s(2))(),
        "canvas (chord)": lambda: chord([add.s(1), add.s(2)], total.s()).apply_async(),
        "canvas (map, starmap)": lambda: add.starmap([(1, 2)]).apply_async(),
        "canvas (chunks)": lambda: add.chunks([(1, 2), (3, 4)], 1).apply_async(),
        "signature.delay()": lambda: add.s(1, 2).delay(),
        "app.send_task()": lambda: app.send_task("maths.add", (1, 2)),
    }
    with serving(JobContext("c:1", "c", 1)):
        for feature, call in calls.items():
            with pytest.raises(CeleryUnsupported) as refused:
                call()
            message = str(refused.value)
            assert message.startswith(feature), message
            assert "\n" not in message
            assert "needs a Celery broker" in message
    # Outside a job the same calls are Celery's own (run eagerly here, with no broker).
    assert chain(add.s(1, 2), add.s(3)).apply_async().get() == 6
    assert add.s(1, 2).delay().get() == 3
    for name in ("canvastasks.maths", "canvastasks"):
        sys.modules.pop(name, None)
