"""The task registry: the allow-list of what a manifest may ask a worker to run.

Task code lives in `workers/tasks/<category>.py`; a function there decorated with
`@task` is registered as `<category>.<function>`. The registry is built by importing
those modules only — a manifest's text never decides what gets imported.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, cast

from orchestrator.errors import UnknownTaskError, UserError

TASKS_PACKAGE = "workers.tasks"
TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MARK = "__orchestrator_task__"

TaskFunction = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=TaskFunction)


def task(function: F | None = None, *, name: str | None = None) -> Any:
    """Mark an async function as a task; `@task` or `@task(name="image.resize")`."""

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"task {fn.__qualname__} must be an async function")
        category = fn.__module__.rsplit(".", 1)[-1]
        task_name = name or f"{category}.{fn.__name__}"
        if not TASK_NAME.match(task_name):
            raise ValueError(f"invalid task name {task_name!r}: use lower_case.dotted_names")
        setattr(fn, _MARK, task_name)
        return cast(F, fn)

    return mark(function) if function is not None else mark


@dataclass(frozen=True)
class TaskDef:
    name: str
    function: TaskFunction

    def signature_problem(self, args: list[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why these arguments cannot call the task, or None when they can."""
        try:
            inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as exc:
            return f"{self.name}: {exc}"
        return None


class TaskRegistry(Mapping[str, TaskDef]):
    def __init__(self, tasks: Mapping[str, TaskDef]) -> None:
        self._tasks = dict(tasks)

    @classmethod
    def discover(cls, *packages: str) -> TaskRegistry:
        """Import every module of the tasks packages and collect their `@task` functions."""
        tasks: dict[str, TaskDef] = {}
        for package in packages or (TASKS_PACKAGE,):
            root = importlib.import_module(package)
            for info in pkgutil.iter_modules(root.__path__, prefix=f"{package}."):
                module = importlib.import_module(info.name)
                for value in vars(module).values():
                    task_name = getattr(value, _MARK, None)
                    if task_name is None or getattr(value, "__module__", None) != info.name:
                        continue
                    if task_name in tasks:
                        raise ValueError(f"task {task_name!r} is defined twice ({info.name})")
                    tasks[task_name] = TaskDef(task_name, value)
        return cls(tasks)

    def require(self, name: str) -> TaskDef:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(self.unknown_reason(name)) from None

    def unknown_reason(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown task {name!r} (not in the registry of workers/tasks){hint}"

    def __getitem__(self, name: str) -> TaskDef:
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


@cache
def task_registry(packages: tuple[str, ...] = (TASKS_PACKAGE,)) -> TaskRegistry:
    """The registry of the given task packages, built once per process."""
    try:
        return TaskRegistry.discover(*packages)
    except ModuleNotFoundError as exc:
        raise UserError(f"task_packages: cannot import {exc.name!r}") from None


def default_registry() -> TaskRegistry:
    """The registry of the installed `workers.tasks` package."""
    return task_registry()
