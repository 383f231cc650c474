from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UnknownTaskError
from orchestrator.registry import TaskDef, TaskRegistry, default_registry, task, task_name_problem


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


def test_task_decorator_takes_plain_and_async_functions_and_refuses_the_rest() -> None:
    def plain() -> int:
        return 1

    async def resize() -> None:
        pass

    def generator() -> Iterator[int]:
        yield 1

    assert task(name="image.plain")(plain) is plain
    assert not TaskDef("image.plain", plain).is_async
    assert TaskDef("image.resize", resize).is_async
    with pytest.raises(TypeError, match="must return its result, not yield it"):
        task(name="image.gen")(generator)
    with pytest.raises(TypeError, match="must be a function"):
        task(name="image.cls")(TaskDef)

    with pytest.raises(ValueError, match="invalid task name"):
        task(name="Image Resize")(resize)
    with pytest.raises(ValueError, match="invalid task name"):  # `$` would let "\n" in
        task(name="image.resize\n")(resize)
    assert task_name_problem("system.echo\n") is not None
    assert task(name="image.resize")(resize).__orchestrator_task__ == "image.resize"


def test_registry_is_an_allow_list_not_an_importer() -> None:
    registry = TaskRegistry({})
    with pytest.raises(UnknownTaskError):
        registry.require("os.system")


async def _typed(  # type: ignore[no-untyped-def]  # `untyped` is the point
    seconds: float,
    names: list[str] | None = None,
    *more: int,
    anything: Any = None,
    untyped=None,
    either: int | str = 0,
    where: Path = Path(),
    **extra: bool,
) -> None:
    pass


TYPED = TaskDef("test.typed", _typed)


def test_int_is_taken_for_float_and_any_or_untyped_take_anything_but_nothing_is_coerced() -> None:
    """The check is strict, not lax: the task gets the values as they are."""
    for args, kwargs in [
        ([1.5], {}),
        ([2], {}),  # an int where a float is annotated
        ([1.0, None, 1, 2], {}),
        ([1.0, ["a"]], {"anything": object(), "untyped": "x"}),
        ([1.0], {"either": "s", "flag": True}),
        ([1.0], {"where": "data/x.db"}),  # a Path comes as a string in JSON
    ]:
        assert TYPED.signature_problem(args, kwargs) is None, (args, kwargs)
    assert TYPED.signature_problem(["1.5"], {}) is not None  # no string is taken for a number


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (["x"], {}, "argument seconds: Input should be a valid number, got 'x'"),
        ([True], {}, "argument seconds: Input should be a valid number, got True"),
        ([1, ["a", 2]], {}, "argument names.1: Input should be a valid string, got 2"),
        ([1, None, 1, 2.5], {}, "argument more.1: Input should be a valid integer, got 2.5"),
        ([1], {"either": 1.5}, "argument either: expected int | str, got 1.5"),
        ([1], {"flag": "yes"}, "argument flag: Input should be a valid boolean, got 'yes'"),
        ([1], {"where": 5}, "argument where: Input should be a valid string, got 5"),
    ],
)
def test_values_of_other_types_than_annotated_are_refused(
    args: list[Any], kwargs: dict[str, Any], expected: str
) -> None:
    """The task would get these values as they are: a string is no number, nor True."""
    assert TYPED.signature_problem(args, kwargs) == f"test.typed: {expected}"


def test_type_checks_are_built_once_per_task_and_call_shape() -> None:
    """A big manifest of one shape builds its validators once, not once per line."""
    task_def = TaskDef("test.typed", _typed)
    for seconds in range(1000):
        assert task_def.signature_problem([seconds], {"either": "x"}) is None
    assert task_def.signature_problem(["x"], {"either": "x"}) is not None
    assert len(task_def._bindings) == 1
