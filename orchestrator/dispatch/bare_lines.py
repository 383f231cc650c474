"""Bare manifest lines on a backlog: how a producer in any language submits a job.

`orchestrator dispatch` queues *envelopes*: a manifest line plus its id, batch and
dispatch time. A producer in another language (a shell script, a Go or Node service)
pushes the manifest line itself, `{"task", "args", "kwargs"?, "meta"?, "id"?}`, and
the conductor makes the envelope when it takes the line: the line's `id`, else
`<backlog>:<uuid>`; the batch `meta.batch`, else one ad-hoc batch per backlog and day
(`adhoc:stress:2026-11-30`, UTC); `dispatched_at` the moment it was taken. The line is
validated as `dispatch` validates one, and refused with the same one-line reason;
whether its task exists is for the live workers to say (see `forward.lua`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import from_json

from orchestrator.job import JOB, JOB_SPEC, Job
from orchestrator.keys import BACKLOG_PREFIX, BATCH_NAME
from orchestrator.manifest import first_problem, pool_problem, unportable
from orchestrator.registry import task_name_problem

ADHOC_PREFIX = "adhoc:"


@dataclass(frozen=True, slots=True)
class BareJob:
    """A bare line made an envelope, and the batch it is to be recorded in."""

    job: Job
    envelope: bytes
    batch: str
    backlog: str


class BareLineError(ValueError):
    """A bare line that `dispatch` would refuse: `field: reason`, as dispatch says it."""


def is_bare(raw: bytes) -> bool:
    """A JSON object that carries neither `batch` nor `dispatched_at`: a manifest line,
    not a damaged envelope (whose own error is the better one to report)."""
    try:
        parsed = from_json(raw)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "batch" not in parsed and "dispatched_at" not in parsed


def envelope_of(
    raw: bytes, backlog: str | None, pools: Collection[str], *, now: float | None = None
) -> BareJob:
    """The envelope of a bare line taken from `backlog` (None: not known any more, the
    line came back from a conductor that died holding it); BareLineError when invalid."""
    try:
        spec = JOB_SPEC.validate_json(raw)
    except ValidationError as exc:
        raise BareLineError(": ".join(first_problem(exc))) from None
    if field := unportable(spec):
        raise BareLineError(f"{field}: NaN, Infinity and numbers beyond 64 bits cannot be queued")
    if not_a_name := task_name_problem(spec["task"]):
        raise BareLineError(f"task: {not_a_name}")
    meta: dict[str, Any] = dict(spec.get("meta") or {})
    if problem := pool_problem(meta, pools):
        raise BareLineError(": ".join(problem))
    taken = time.time() if now is None else now
    source = backlog or f"{BACKLOG_PREFIX}recovered"
    batch = meta.get("batch")
    if batch is None:
        day = time.strftime("%Y-%m-%d", time.gmtime(taken))
        batch = f"{ADHOC_PREFIX}{source.removeprefix(BACKLOG_PREFIX)}:{day}"
    elif not isinstance(batch, str) or not BATCH_NAME.match(batch):
        raise BareLineError(
            f"meta.batch: {batch!r} is not a batch name (letters, digits and _ . : -, "
            "at most 150 characters, starting with a letter or digit)"
        )
    envelope = {
        **spec,
        "id": spec.get("id") or f"{source}:{uuid.uuid4().hex}",
        "batch": batch,
        "dispatched_at": taken,
    }
    encoded = orjson.dumps(envelope)
    return BareJob(JOB.validate_json(encoded), encoded, batch, source)
