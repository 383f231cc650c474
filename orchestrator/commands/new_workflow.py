"""`orchestrator new-workflow NAME`: scaffold a workflow, its task module and a test.

The files come from `orchestrator/templates/` and make a workflow that works as
generated: `orchestrator plan NAME` plans `CATEGORY.process` jobs, the task runs them,
and the generated test passes. Nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import sys
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from orchestrator.celery_tasks import CELERY_EXTRA
from orchestrator.commands.common import add_common_options
from orchestrator.errors import EXIT_OK, UserError
from orchestrator.settings import Settings

ORDER = 95
# A Python package name that is also a valid workflow and task-category name, short
# enough that the generated lines stay within the line length.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,23}\Z")
_MARKERS = (Path("workflows", "__init__.py"), Path("workers", "tasks", "__init__.py"))


def register(commands: Any) -> None:
    new = commands.add_parser(
        "new-workflow",
        help="scaffold a workflow: its planner, its task module and a passing test",
        description=(
            "Write workflows/NAME/plan.py (a planner with one mode, process), "
            "workers/tasks/CATEGORY.py (the task CATEGORY.process) and "
            "tests/workflows/test_workflow_NAME.py, which passes as generated. "
            "Refuses to overwrite anything."
        ),
    )
    new.add_argument("name", metavar="NAME", type=_name, help="the workflow's name (lower_case)")
    new.add_argument(
        "--category", type=_name, default=None, help="task category and module (default: NAME)"
    )
    new.add_argument("--summary", type=_summary, default=None, help="one line for its --help")
    new.add_argument(
        "--celery",
        action="store_true",
        help="write the task as a Celery task (@shared_task, run with no Celery broker; "
        "needs the celery extra) instead of an @task function",
    )
    new.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the project to write into (default: the nearest directory, from here up, "
        "holding workflows/ and workers/tasks/)",
    )
    add_common_options(new)
    new.set_defaults(command=_new_workflow, uses_stack=False)


def scaffold(name: str, category: str, summary: str, celery: bool = False) -> dict[Path, str]:
    """The files of a new workflow, by path relative to the project root."""
    values = {
        "name": name, "category": category, "summary": summary,
        "test_def": "def" if celery else "async def",
        "call": 'process("item-0")' if celery else 'await process("item-0")',
    }  # fmt: skip
    templates = resources.files("orchestrator").joinpath("templates")

    def render(template: str) -> str:
        return Template(templates.joinpath(template).read_text()).substitute(values)

    return {
        Path("workflows", name, "__init__.py"): f'"""{name}: {summary}"""\n',
        Path("workflows", name, "plan.py"): render("plan.py.tmpl"),
        Path("workers", "tasks", f"{category}.py"): render(
            "tasks_celery.py.tmpl" if celery else "tasks.py.tmpl"
        ),
        Path("tests", "workflows", f"test_workflow_{name}.py"): render("test.py.tmpl"),
    }


def _new_workflow(options: argparse.Namespace, settings: Settings) -> int:
    root: Path = options.root or _project_root(Path.cwd())
    if not all((root / marker).is_file() for marker in _MARKERS):
        raise UserError(
            f"{root} is not an orchestrator project (no workflows/ and workers/tasks/ "
            "packages): run this in the project or pass --root"
        )
    name: str = options.name
    category: str = options.category or name
    if options.celery and importlib.util.find_spec("celery") is None:
        raise UserError(f"--celery needs Celery: {CELERY_EXTRA} (the celery extra)")
    summary = options.summary or f"Plans {category}.process jobs."
    files = scaffold(name, category, summary, celery=options.celery)
    for taken in [root / "workflows" / name, *(root / path for path in files)]:
        if taken.exists():
            raise UserError(f"{taken} already exists; choose another name (or --category)")
    written: list[Path] = []
    try:
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            with (root / path).open("x") as file:  # "x": never overwrite, even in a race
                file.write(text)
            written.append(root / path)
    except OSError as exc:
        for path in written:
            path.unlink()
        raise UserError(f"cannot write {exc.filename}: {exc.strerror}") from None

    test = Path("tests", "workflows", f"test_workflow_{name}.py")
    print(f"created workflow {name} in {root}:")
    print("".join(f"  {path}\n" for path in files), end="")
    print(f"try it:\n  orchestrator plan {name} --mode process --count 3\n  pytest {test}")
    print(f"to run every {category}.* job on cloud, add to orchestrator.toml:")
    print(f'  [[rules]]\n  task = "{category}.*"\n  pool = "cloud"')
    _warn_if_not_imported_from(root)
    return EXIT_OK


def _project_root(start: Path) -> Path:
    for directory in (start, *start.parents):
        if all((directory / marker).is_file() for marker in _MARKERS):
            return directory
    return start


def _warn_if_not_imported_from(root: Path) -> None:
    """Discovery imports the installed `workflows` package: say so if that is elsewhere."""
    found = importlib.util.find_spec("workflows")
    origin = Path(found.origin).parent.parent if found and found.origin else None
    if origin is None or origin.resolve() != root.resolve():
        print(
            f"note: this Python imports workflows from {origin or 'nowhere'}, not {root}; "
            f"install the project (pip install -e {root}) or add it to PYTHONPATH",
            file=sys.stderr,
        )


def _name(text: str) -> str:
    if not _NAME.match(text) or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a lower_case Python name of at most 24 characters"
        )
    return text


def _summary(text: str) -> str:
    # It goes into a docstring and a string literal as it is.
    if len(text) > 72 or not text.isprintable() or '"' in text or "\\" in text:
        raise argparse.ArgumentTypeError('one printable line of at most 72 characters, no " or \\')
    return text
