"""The README's Architecture section stays true: it names every module of the package."""

from __future__ import annotations

import re
from pathlib import Path

from tests import test_layout as layout

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "orchestrator"


def architecture_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "\n## Architecture\n" in readme, "README.md has no '## Architecture' section"
    return readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_every_module_under_orchestrator_is_named_in_the_architecture_section() -> None:
    mentioned = set(re.findall(r"`([a-z_/]+\.py)`", architecture_section()))
    named = {name for name in mentioned if not name.startswith(("tests/", "workers/"))}
    modules = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("__")
    }
    missing = sorted(modules - named)
    assert not missing, f"README Architecture section does not name: {', '.join(missing)}"
    gone = sorted(name for name in named if not (PACKAGE / name).exists())
    assert not gone, f"README Architecture section names modules that do not exist: {gone}"


def test_the_life_of_a_job_names_the_redis_keys_it_passes_through() -> None:
    section = architecture_section()
    for stage in ("dispatch", "backlog", "processing", "arq queue", "worker", "receipt"):
        assert stage in section, f"the life of a job does not mention {stage!r}"


def test_every_part_package_is_named_with_what_its_init_says_it_may_import() -> None:
    """The README's table of parts is the `May import:` lines of their `__init__.py`."""
    section = architecture_section()
    for package in sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")):
        assert f"{package}/" in section, f"README Architecture section does not name {package}/"
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (.+?) \| (.+?) \|$", section, re.MULTILINE):
        parts, allowed = (set(re.findall(r"`([a-z_]+)`", cell)) for cell in row)
        allowed |= {"core"} if "the core" in row[1] else set()
        for part in parts:
            table[part] = allowed
    declared = layout.declared()
    assert {part: table.get(part) for part in declared} == declared
