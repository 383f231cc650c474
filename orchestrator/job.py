"""The job contract: a manifest line as planners write it, and the envelope on Redis.

A manifest line (`JobSpec`) is what a user or a planner asks for; the envelope (`Job`)
adds the identity and provenance every later record carries. Both are plain JSON, never
pickle: whoever can write to Redis must not be able to run code on a worker.

They are TypedDicts validated by pydantic rather than BaseModels: dispatch validates
every line of manifests a million lines long, and a TypedDict validates about twice as
fast and comes out as the dict the envelope is encoded from, without a dump step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired, cast

import orjson
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

JobId = Annotated[str, Field(pattern=r"^\S+$", min_length=1, max_length=200)]
# Priorities: higher runs first, 0 is the default, equal ones keep their order. Each level
# in use costs one Redis list per backlog; the bounds keep arq's queue scores exact.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX, strict=True)]


@with_config(ConfigDict(extra="allow"))
class JobMeta(TypedDict, total=False):
    """Scheduling hints the conductor understands; any other field is kept as it is."""

    pool: str  # pin the job to this pool (dispatch refuses a pool that is not configured)
    priority: Priority  # higher is taken first from a backlog and runs first in a pool
    rate_limit: list[str]  # extra token buckets the job must pass
    timeout: PositiveFloat  # seconds before the worker gives up on it
    max_tries: PositiveInt


@with_config(ConfigDict(extra="forbid"))
class JobSpec(TypedDict):
    """One manifest line: `{"task", "args", "kwargs"?, "meta"?, "id"?}`."""

    task: str
    args: list[Any]
    kwargs: NotRequired[dict[str, Any]]
    meta: NotRequired[JobMeta]
    id: NotRequired[JobId]


@with_config(ConfigDict(extra="forbid"))
class Job(TypedDict):
    """The envelope on a backlog: the spec plus its id, batch and dispatch time."""

    id: JobId
    batch: str
    task: str
    args: list[Any]
    kwargs: NotRequired[dict[str, Any]]
    meta: NotRequired[JobMeta]
    dispatched_at: Annotated[float, Field(allow_inf_nan=False)]
    rate_paid: NotRequired[bool]  # set by the conductor once the job's rate limits passed
    priority: NotRequired[Priority]  # `dispatch --priority`: the batch's, over meta.priority


JOB_SPEC: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
JOB: TypeAdapter[Job] = TypeAdapter(Job)


def spec(task: str, *args: Any, meta: Mapping[str, Any] | None = None, **kwargs: Any) -> JobSpec:
    """A manifest line from Python, the way planners build them.

    `meta` is a plain mapping because its free user fields are not part of `JobMeta`'s
    declared keys; the writer validates the line before it reaches a manifest.
    """
    line: JobSpec = {"task": task, "args": list(args)}
    if kwargs:
        line["kwargs"] = kwargs
    if meta:
        line["meta"] = cast(JobMeta, dict(meta))
    return line


class EnvelopeEncoder:
    """Encodes a batch's envelopes from the validated manifest bytes themselves.

    Re-serializing each parsed line cost as much as validating it; splicing the id,
    batch and dispatch time into the line's own JSON object is a few byte copies. Sound
    because the line was validated as a JSON object that has none of those keys (`id`
    only when it is added here). With `priority` (`dispatch --priority`), every envelope
    carries it, over its line's `meta.priority`.
    """

    def __init__(self, batch: str, dispatched_at: float, priority: int | None = None) -> None:
        given = b"" if priority is None else b',"priority":' + orjson.dumps(priority)
        self._suffix = (
            b',"batch":' + orjson.dumps(batch)
            + b',"dispatched_at":' + orjson.dumps(dispatched_at) + given + b"}"
        )  # fmt: skip

    def encode(self, raw: bytes, job_id: str, add_id: bool) -> bytes:
        body = raw.rstrip()[:-1]  # drop the object's closing brace
        if add_id:
            return body + b',"id":' + orjson.dumps(job_id) + self._suffix
        return body + self._suffix


def priority_of(job: Job | JobSpec) -> int:
    """A job's priority: the one its batch was dispatched with, else its own, else 0."""
    given = job.get("priority")
    if given is None:
        given = job.get("meta", {}).get("priority")
    return given if isinstance(given, int) else 0


def requeued(envelope: Mapping[str, Any]) -> bytes:
    """An envelope as it goes back in line (dlq requeue, retry, a paused pool's jobs taken
    back): `rate_paid` dropped, as its rate limits were paid for a forward that is over
    and the next one must pay again."""
    return orjson.dumps({name: value for name, value in envelope.items() if name != "rate_paid"})


def mark_paid(raw: bytes) -> bytes:
    """The envelope with `rate_paid` set, by splicing (the conductor never re-encodes)."""
    return raw.rstrip()[:-1] + b',"rate_paid":true}'


def job_count(count: int) -> str:
    """`1 job`, `2 jobs`: how every message a user reads counts jobs."""
    return f"{count} job" if count == 1 else f"{count} jobs"


def derived_job_id(batch: str, line_number: int) -> str:
    """The id of a line that names none: `<manifest stem>:<line number>` (1-based)."""
    return f"{batch}:{line_number}"
