"""The package's layout holds: imports go entry → parts → core, a part imports only the
parts its `__init__.py` names (`May import: …`), those declarations have no cycle, and
no module grows past 400 lines.

Every import counts: at module level, inside functions, and under `TYPE_CHECKING` — a
type-only import still ties a part to another for whoever reads or moves it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
ENTRY_MODULES = {"cli", "__main__"}
ENTRY_PACKAGES = {"commands"}
MAX_LINES = 400
_MAY_IMPORT = re.compile(r"^May import: (?P<what>[^\n]+)\.$", re.MULTILINE)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted, without `orchestrator.`
    target: str  # what it imports, dotted, without `orchestrator.`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    """`name`: the module's dotted name, when `path` is not under the package."""
    name = module_name(path) if name is None else name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = ["orchestrator", *package.split(".")] if package else ["orchestrator"]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from orchestrator.x import y`: y may be a module of its own
            targets = [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == "orchestrator" or target.startswith("orchestrator."):
                found.append(
                    Import(name, target.removeprefix("orchestrator").lstrip("."), node.lineno)
                )
    return found


def part_of(module: str) -> str:
    """`entry`, `core`, or the part package a module belongs to."""
    head = module.split(".")[0]
    if head in ENTRY_MODULES or head in ENTRY_PACKAGES:
        return "entry"
    if (PACKAGE / head).is_dir() and (PACKAGE / head / "__init__.py").exists():
        return head
    return "core"


def declared() -> dict[str, set[str]]:
    """Each part's `May import:` line, as the set of parts it may import."""
    allowed: dict[str, set[str]] = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        part = init.parent.name
        if part in ENTRY_PACKAGES:
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        said = _MAY_IMPORT.search(docstring)
        assert said, f"orchestrator/{part}/__init__.py does not say 'May import: ….'"
        names = {name.strip() for name in said["what"].split(",")}
        allowed[part] = {"core" if name == "the core" else name for name in names}
    return allowed


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_says_what_it_does_and_may_import_only_real_parts() -> None:
    allowed = declared()
    assert set(allowed) >= {"dispatch", "conductor", "worker", "scaling", "status", "verify"}
    for part, parts in allowed.items():
        assert "core" in parts, f"{part} must be allowed the core"
        unknown = parts - set(allowed) - {"core"}
        assert not unknown, f"{part} may import {sorted(unknown)}, which are not parts"
        assert part not in parts, f"{part} names itself"


def test_the_parts_import_each_other_without_a_cycle() -> None:
    graph = {part: parts - {"core"} for part, parts in declared().items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        pytest.fail(f"the parts' May import lines make a cycle: {' → '.join(cycle.args[1])}")
    assert set(order) == set(graph)


def test_every_import_follows_the_declared_direction() -> None:
    allowed = declared()
    wrong = []
    for path in python_files():
        for found in imports_of(path):
            source, target = part_of(found.source), part_of(found.target)
            if source == "entry" or source == target or target == "core":
                ok = not (source == "core" and target != "core") or source == "entry"
            elif target == "entry":
                ok = False
            else:
                ok = source != "core" and target in allowed[source]
            if not ok:
                where = path.relative_to(PACKAGE.parent)
                wrong.append(f"{where}:{found.line}: {source} imports {found.target} ({target})")
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_no_module_passes_the_line_limit() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}: {count} lines"
        for path in python_files()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, f"over {MAX_LINES} lines: {', '.join(long)}"


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The direction check reads what it must: a module-level import, a type-only one,
    a lazy one inside a function, and a relative one."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "from orchestrator.keys import Keys\n"
        "if TYPE_CHECKING:\n"
        "    from orchestrator.status.snapshot import Snapshot\n"
        "def later():\n"
        "    from orchestrator.conductor import rounds\n"
        "from ..stack import demo\n"
    )
    targets = {(found.target, found.line) for found in imports_of(probe, "worker.probe")}
    assert targets == {
        ("keys.Keys", 2),
        ("status.snapshot.Snapshot", 4),
        ("conductor.rounds", 6),
        ("stack.demo", 7),
    }
    assert part_of("status.snapshot.Snapshot") == "status"
    assert part_of("keys.Keys") == "core"
    assert part_of("commands.common") == "entry"
    assert "stack" not in declared()["worker"]
