"""The subcommands of `orchestrator`: every module here with a `register` function.

A module declares `ORDER` (its place in `--help`) and `register(commands)`, which adds
its subparser and sets `command=` to the function that runs it. Nothing else lists the
commands, so adding one is adding a module. A workflow adds its own commands the same
way, through `Workflow.register_commands` (see orchestrator/workflow.py and cli.py).

May import: anything (with `cli.py` and `__main__.py`, this is the entry).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    modules = []
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        module = importlib.import_module(info.name)
        if hasattr(module, "register"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
