"""How the registry finds tasks: every module of the task packages imported, its `@task`
functions and its Celery tasks collected under their names.

Whatever a user got wrong here — a module that fails to import, Celery not installed,
two tasks of one name, a Celery name that is no task name — is one line naming the
module (and both places), never a traceback from the worker or dispatch.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable
from typing import Any

from orchestrator.celery_tasks import CELERY_EXTRA, celery_tasks
from orchestrator.errors import UserError
from orchestrator.registry import TASK_MARK, TaskDef


def discover(packages: Iterable[str]) -> dict[str, TaskDef]:
    tasks: dict[str, TaskDef] = {}

    def add(definition: TaskDef) -> None:
        if (earlier := tasks.get(definition.name)) is not None:
            first, second = _where(earlier.function), _where(definition.function)
            raise UserError(
                f"task {definition.name!r} is defined twice: {first} and {second} "
                "(give one of them another name=)"
            )
        tasks[definition.name] = definition

    for package in packages:
        root = _import(package)
        for info in pkgutil.iter_modules(getattr(root, "__path__", []), prefix=f"{package}."):
            module = _import(info.name)
            for value in vars(module).values():
                task_name = getattr(value, TASK_MARK, None)
                if task_name is not None and getattr(value, "__module__", None) == info.name:
                    add(TaskDef(task_name, value))
            for task_name, function, options in celery_tasks(module):
                add(TaskDef(task_name, function, **options))
    return tasks


def _import(name: str) -> Any:
    """The module, or one line saying why it cannot be had: a task module's own error
    (a syntax error, an exception at import, a package it needs) is the user's to fix,
    and must not end the worker or dispatch in a traceback."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            raise UserError(f"task_packages: cannot import {name!r}: no such module") from None
        if exc.name == "celery":
            raise UserError(
                f"task module {name} uses Celery, which is not installed: "
                f"{CELERY_EXTRA} (the celery extra)"
            ) from None
        raise UserError(f"task module {name}: {type(exc).__name__}: {exc}") from None
    except SyntaxError as exc:
        place = f"{exc.filename}:{exc.lineno}" if exc.filename else name
        raise UserError(f"task module {name}: SyntaxError at {place}: {exc.msg}") from None
    except Exception as exc:
        raise UserError(
            f"task module {name} failed to import: {type(exc).__name__}: {exc}"
        ) from None


def _where(function: Any) -> str:
    code = getattr(function, "__code__", None)
    line = f":{code.co_firstlineno}" if code is not None else ""
    path = inspect.getsourcefile(function) or "?"
    return f"{function.__module__}.{function.__qualname__} ({path}{line})"
