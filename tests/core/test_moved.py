"""Code written against the flat layout of 0.1 still imports, with a warning that names
the new path, and gets the very objects the new modules hold."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from orchestrator import _moved


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MOVED.items()))
def test_an_old_module_path_warns_and_reads_the_new_module(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        stand_in = importlib.import_module(old)
    module = importlib.import_module(new)
    public = [name for name in vars(module) if not name.startswith("_")]
    assert public
    for name in public:
        assert getattr(stand_in, name) is getattr(module, name)
    assert set(public) <= set(dir(stand_in))
    with pytest.raises(AttributeError):
        _ = stand_in.no_such_name


@pytest.mark.parametrize(("package", "new"), sorted(_moved.BECAME_PACKAGE.items()))
def test_an_old_module_that_is_now_a_package_still_gives_its_names(package: str, new: str) -> None:
    module = importlib.import_module(new)
    name = next(n for n in vars(module) if not n.startswith("_") and not n[0].islower())
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", f"from {package} import {name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{package}.{name} moved to {new}.{name}" in proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module(package)
        assert getattr(old, name) is getattr(module, name)


def test_a_submodule_of_a_part_is_imported_not_forwarded() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from orchestrator.conductor import wakeup
        from orchestrator.status import view
    assert wakeup.__name__ == "orchestrator.conductor.wakeup"
    assert view.__name__ == "orchestrator.status.view"
    with pytest.raises(ImportError):
        from orchestrator.conductor import no_such_thing  # noqa: F401


def test_the_paths_users_were_told_to_import_did_not_move() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for path in ("registry", "job", "workflow", "errors", "settings", "commands.common"):
            importlib.import_module(f"orchestrator.{path}")
        from orchestrator.registry import task
    assert callable(task)
