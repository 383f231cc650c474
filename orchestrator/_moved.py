"""The import paths of modules that moved into part packages, kept working with a
`DeprecationWarning` until 0.3.

Version 0.1 kept 56 modules side by side in `orchestrator/`; they now live in one package
per part of the flow (`orchestrator.conductor_routing` is `orchestrator.conductor.forwarding`).
Code written against the old paths keeps running: a finder on `sys.meta_path` answers
an old module name with a stand-in that forwards every attribute to the new module. An
old name that is now a package's (`orchestrator.conductor` was the round loop, and is
now the conductor's package) is served by that package's `__getattr__` (`forward`).
The stand-in forwards reads only: patch the new module, not the old name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

# old module → new module
MOVED = {
    "orchestrator.arq_worker": "orchestrator.worker.arq_hooks",
    "orchestrator.bare_lines": "orchestrator.dispatch.bare_lines",
    "orchestrator.batch_detail": "orchestrator.status.batch_detail",
    "orchestrator.cancel": "orchestrator.control.cancel",
    "orchestrator.conductor_liveness": "orchestrator.conductor.liveness",
    "orchestrator.conductor_routing": "orchestrator.conductor.forwarding",
    "orchestrator.conductor_wakeup": "orchestrator.conductor.wakeup",
    "orchestrator.deadletters": "orchestrator.control.deadletters",
    "orchestrator.demo": "orchestrator.stack.demo",
    "orchestrator.job_stops": "orchestrator.worker.stops",
    "orchestrator.launches": "orchestrator.scaling.launches",
    "orchestrator.local_stack": "orchestrator.stack.local",
    "orchestrator.pausing": "orchestrator.control.pausing",
    "orchestrator.progress": "orchestrator.commands.progress",
    "orchestrator.providers": "orchestrator.scaling.providers",
    "orchestrator.ratelimits": "orchestrator.conductor.ratelimits",
    "orchestrator.redis_server": "orchestrator.stack.redis_server",
    "orchestrator.retry": "orchestrator.control.retry",
    "orchestrator.scaler": "orchestrator.scaling.scaler",
    "orchestrator.scaler_reads": "orchestrator.scaling.reads",
    "orchestrator.stack_record": "orchestrator.stack.record",
    "orchestrator.status_batches": "orchestrator.status.batches",
    "orchestrator.status_model": "orchestrator.status.model",
    "orchestrator.status_scaler": "orchestrator.status.scaler",
    "orchestrator.status_view": "orchestrator.status.view",
    "orchestrator.status_watch": "orchestrator.status.watch",
    "orchestrator.verify_cost": "orchestrator.verify.cost",
    "orchestrator.verify_wait": "orchestrator.verify.wait",
    "orchestrator.worker_heartbeat": "orchestrator.worker.heartbeat",
    "orchestrator.worker_runner": "orchestrator.worker.runner",
    "orchestrator.worker_state": "orchestrator.worker.state",
}
# a package that took its old module's name → the module that old name's contents are in
BECAME_PACKAGE = {
    "orchestrator.conductor": "orchestrator.conductor.rounds",
    "orchestrator.dispatch": "orchestrator.dispatch.manifests",
    "orchestrator.scaling": "orchestrator.scaling.policy",
    "orchestrator.status": "orchestrator.status.snapshot",
    "orchestrator.verify": "orchestrator.verify.verifier",
    "orchestrator.worker": "orchestrator.worker.process",
}


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} moved to {new}; import it from there ({old} goes away in 0.3)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def forward(package: str, name: str) -> Any:
    """An attribute of the module a package's old name stood for (its `__getattr__`).

    A submodule's name is never forwarded, so `from orchestrator.conductor import
    wakeup` still imports the submodule.
    """
    new = BECAME_PACKAGE[package]
    if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is not None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(new)
    if not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{new}.{name}", stacklevel=4)  # the reader of the name
    value = getattr(module, name)
    setattr(sys.modules[package], name, value)  # warned once: `from … import` reads twice
    return value


class _StandIn(ModuleType):
    """An old module name: every attribute read from the module that replaced it."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name)
        self.__target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__target), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__target))


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(spec.name, self._target, stacklevel=3)  # the importer's line, not ours
        target = importlib.import_module(self._target)
        stand_in = _StandIn(spec.name, self._target)
        # `from old import *` as the flat module gave it: its public names
        stand_in.__all__ = getattr(  # type: ignore[attr-defined]
            target, "__all__", [name for name in vars(target) if not name.startswith("_")]
        )
        return stand_in

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the stand-in reads the new module on demand."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Loader(new))


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
