"""Manifest files: versioned names that never overwrite, a validating writer, and a
streaming reader that holds one line at a time (a million-line manifest costs no more
memory than a ten-line one).
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple

import orjson
from pydantic import ValidationError

from orchestrator.errors import ManifestError, UserError
from orchestrator.job import JOB_SPEC, JobSpec
from orchestrator.registry import TaskDef, TaskRegistry

SUFFIX = ".jsonl"
_BLOCK_BYTES = 1 << 20
_NAME_PART = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")


def get_next_filename(workflow: str, mode: str, directory: Path) -> Path:
    """Reserve and return `<directory>/<workflow>_<mode>_NN.jsonl`, NN the next free number.

    The file is created empty with O_EXCL, so two planners running at once can never be
    handed the same name; numbers are two digits and simply grow past 99.
    """
    for part, label in ((workflow, "workflow"), (mode, "mode")):
        if not _NAME_PART.match(part):
            raise UserError(
                f"invalid {label} name {part!r}: use lower-case letters, digits, _ and -"
            )
    directory.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(workflow)}_{re.escape(mode)}_(\d+){re.escape(SUFFIX)}\Z")
    taken = [int(m.group(1)) for p in directory.iterdir() if (m := pattern.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        path = directory / f"{workflow}_{mode}_{number:02d}{SUFFIX}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            number += 1
            continue
        return path


class ManifestWriter:
    """Writes validated lines to a reserved manifest path, all or nothing.

    Lines go to a temporary file that replaces the reserved (empty) name only when the
    whole plan succeeded; on any error the reservation is removed, so no half-written
    manifest is ever left for `dispatch` to pick up.
    """

    def __init__(
        self, path: Path, registry: TaskRegistry, *, pools: Collection[str] | None = None
    ) -> None:
        self.path = path
        self.registry = registry
        self.pools = pools
        self.count = 0
        self.tasks: dict[str, int] = {}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")

    def write(self, line: JobSpec) -> None:
        where = f"{self.path} (job {self.count + 1})"
        try:
            checked = JOB_SPEC.validate_python(line)
        except ValidationError as exc:
            raise ManifestError(where, None, *first_problem(exc)) from None
        problem = _task_problem(self.registry, checked) or pool_problem(
            checked.get("meta"), self.pools
        )
        if problem:
            raise ManifestError(where, None, *problem)
        self._file.write(orjson.dumps(checked) + b"\n")
        self.count += 1
        self.tasks[checked["task"]] = self.tasks.get(checked["task"], 0) + 1

    def write_all(self, lines: Iterable[JobSpec]) -> None:
        for line in lines:
            self.write(line)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
        if kind is None and self.count:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        if kind is None:
            raise UserError(f"the plan produced no jobs; nothing written to {self.path}")


class ManifestLine(NamedTuple):
    """One validated line; a NamedTuple because a million are made per big dispatch."""

    number: int
    job_id: str
    spec: JobSpec
    raw: bytes  # the line as written (validated JSON), for encoders that reuse it
    derived_id: bool  # True when the line named no id and got `<batch>:<line>`


def read_manifest(
    path: Path,
    registry: TaskRegistry,
    batch: str,
    max_line_bytes: int,
    *,
    pools: Collection[str] | None = None,
) -> Iterator[ManifestLine]:
    """Yield every line of a manifest validated, or raise `ManifestError` at the first bad one.

    Blank lines are skipped but still counted, so line numbers match an editor's. A line
    naming no `id` gets `<batch>:<line>`; an explicit id may not take that reserved form
    nor repeat within the manifest. With `pools`, a `meta.pool` must name one of them:
    a typo is refused here rather than dead-lettered when the job is routed.
    """
    shown = str(path)
    if not path.exists():
        raise ManifestError(shown, None, "", "no such file" + _did_you_mean(path))
    if not path.is_file():
        raise ManifestError(shown, None, "", "not a regular file")
    reserved = re.compile(rf"^{re.escape(batch)}:\d+\Z")
    given_ids: dict[str, int] = {}
    tasks: dict[str, TaskDef | str] = {}  # looked up once each; a str says why it is unknown
    count = 0
    with path.open("rb") as file:
        for number, raw in _numbered_lines(file, shown, max_line_bytes):
            if not raw or raw.isspace():
                continue
            try:
                spec = JOB_SPEC.validate_json(raw)
            except ValidationError as exc:
                raise ManifestError(shown, number, *first_problem(exc)) from None
            if _NOT_PORTABLE.search(raw) and (field := unportable(spec)):
                raise ManifestError(
                    shown,
                    number,
                    field,
                    "NaN, Infinity and numbers beyond 64 bits cannot be queued",
                )
            name = spec["task"]
            definition = tasks.get(name)
            if definition is None:
                definition = tasks[name] = registry.get(name) or registry.unknown_reason(name)
            if isinstance(definition, str):
                raise ManifestError(shown, number, "task", definition)
            if reason := definition.signature_problem(spec["args"], spec.get("kwargs", _NONE)):
                raise ManifestError(shown, number, "args", reason)
            if pools is not None and (problem := pool_problem(spec.get("meta"), pools)):
                raise ManifestError(shown, number, *problem)
            job_id = spec.get("id")
            derived = job_id is None
            if job_id is None:
                job_id = f"{batch}:{number}"  # derived_job_id, inlined on this hot path
            else:
                if reserved.match(job_id):
                    raise ManifestError(
                        shown, number, "id", f"{job_id!r} has the form reserved for derived ids"
                    )
                if job_id in given_ids:
                    raise ManifestError(
                        shown,
                        number,
                        "id",
                        f"{job_id!r} repeats the id of line {given_ids[job_id]}",
                    )
                given_ids[job_id] = number
            count += 1
            yield ManifestLine(number, job_id, spec, raw, derived)
    if count == 0:
        raise ManifestError(shown, None, "", "the manifest holds no jobs")


def _did_you_mean(path: Path) -> str:
    """`; did you mean <the manifest beside it with the closest name>?`, or ""."""
    try:
        names = [p.name for p in path.parent.iterdir() if p.name.endswith(SUFFIX)]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.8)
    return f"; did you mean {path.with_name(close[0])}?" if close else ""


def manifest_digest(path: Path) -> str:
    """SHA-256 of a manifest: with its name, what identifies a batch (dispatch records
    it, verify checks the manifest it reads is the one dispatched)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _numbered_lines(file: BinaryIO, shown: str, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Lines without their newline, read in large blocks: far fewer calls than readline,
    and never more than one block plus one line (at most `max_line_bytes`) in memory."""
    number = 0
    tail = b""
    first = True
    while block := file.read(_BLOCK_BYTES):
        if first:  # a UTF-8 byte order mark, as Windows editors write: not JSON, dropped
            block, first = block.removeprefix(codecs.BOM_UTF8), False
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        for raw in lines:
            number += 1
            if len(raw) > max_line_bytes:
                raise ManifestError(
                    shown, number, "line", f"longer than the limit of {max_line_bytes} bytes"
                )
            yield number, raw
        if len(tail) > max_line_bytes:
            raise ManifestError(
                shown, number + 1, "line", f"longer than the limit of {max_line_bytes} bytes"
            )
    if tail:
        yield number + 1, tail


# Cheap screen for what pydantic's parser accepts but JSON does not hold (NaN, Infinity)
# or the rest of the system cannot carry (integers beyond 64 bits, floats beyond double):
# only lines that match pay for walking the parsed line.
_NOT_PORTABLE = re.compile(rb"NaN|Infinity|\d{19}|[eE][+]?\d{3}")


def unportable(value: Any, path: str = "") -> str | None:
    """The dotted path of the first value JSON does not hold (NaN, Infinity) or the
    rest of the system cannot carry (integers beyond 64 bits), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "line"
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return path or "line"
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        if found := unportable(item, f"{path}.{key}" if path else str(key)):
            return found
    return None


_NONE: Mapping[str, Any] = {}


def pool_problem(
    meta: Mapping[str, Any] | None, pools: Collection[str] | None
) -> tuple[str, str] | None:
    """Why `meta.pool` names no configured pool, or None (also when nothing is pinned)."""
    if not meta or pools is None or (pool := meta.get("pool")) is None or pool in pools:
        return None
    close = difflib.get_close_matches(str(pool), pools, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return "meta.pool", f"{pool!r} is not a configured pool ({', '.join(pools)}){hint}"


def _task_problem(registry: TaskRegistry, spec: JobSpec) -> tuple[str, str] | None:
    definition = registry.get(spec["task"])
    if definition is None:
        return "task", registry.unknown_reason(spec["task"])
    reason = definition.signature_problem(spec["args"], spec.get("kwargs", {}))
    return ("args", reason) if reason else None


def first_problem(exc: ValidationError) -> tuple[str, str]:
    error: Any = exc.errors(include_url=False)[0]
    if error["type"] == "json_invalid":
        return "json", f"invalid JSON ({error['ctx']['error']})"
    field = ".".join(str(part) for part in error["loc"]) or "line"
    if error["type"] == "extra_forbidden":
        return field, "unknown field (a line has task, args, kwargs, meta, id)"
    return field, str(error["msg"])
