from __future__ import annotations

import pytest

from orchestrator.errors import UnknownTaskError
from orchestrator.registry import TaskRegistry, default_registry, task


def test_system_tasks_are_discovered_by_category_and_name() -> None:
    assert {"system.sleep", "system.echo", "system.crud"} <= set(default_registry())


def test_unknown_task_is_refused_with_a_suggestion() -> None:
    with pytest.raises(
        UnknownTaskError, match=r"unknown task 'system\.ecko'.*did you mean 'system\.echo'"
    ):
        default_registry().require("system.ecko")


def test_signature_problems_are_reported_per_call_shape() -> None:
    sleep = default_registry()["system.sleep"]
    assert sleep.signature_problem([1.0], {}) is None
    assert "missing a required argument" in (sleep.signature_problem([], {}) or "")
    assert "unexpected keyword" in (sleep.signature_problem([1], {"speed": 2}) or "")
    echo = default_registry()["system.echo"]
    assert echo.signature_problem(list(range(50)), {}) is None


def test_task_decorator_refuses_sync_functions_and_bad_names() -> None:
    with pytest.raises(TypeError, match="must be an async function"):
        task(lambda: None)

    async def resize() -> None:
        pass

    with pytest.raises(ValueError, match="invalid task name"):
        task(name="Image Resize")(resize)
    assert task(name="image.resize")(resize).__orchestrator_task__ == "image.resize"


def test_registry_is_an_allow_list_not_an_importer() -> None:
    registry = TaskRegistry({})
    with pytest.raises(UnknownTaskError):
        registry.require("os.system")
