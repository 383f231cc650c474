"""Fuzzed payloads pushed straight onto a backlog, past dispatch and its validation.

Whoever can write to Redis can put anything on a backlog. A real conductor must take
each payload off, run what is a valid envelope, dead-letter everything else with its
reason, and keep going: no crash, no payload stuck in a backlog, ready or processing
list, no job silently dropped.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.job import PRIORITY_MAX, PRIORITY_MIN
from orchestrator.receipts import RESULT_LIMIT
from orchestrator.registry import TASK_NAME, task_registry
from tests.conftest import StackFactory
from tests.live_stack import Stack

BACKLOG = "backlog:default"
SUCCEEDED = "succeeded"
# What the conductor may call a payload it will not forward.
DEAD_REASONS = {"invalid_payload", "unknown_pool", "unserializable"}
# A well-formed task name that no live worker announces: the job waits for one.
NO_WORKER = "no_worker"
# The tasks the stack's workers know (see tests.live_stack.Stack's task_packages).
KNOWN_TASKS = set(task_registry(("workers.tasks", "tests.fixtures.tasks")))
POOLS = {"metal", "cloud"}


@dataclass(frozen=True)
class Case:
    """One payload and what must become of it: `succeeded`, or a dead-letter reason."""

    expect: str
    raw: bytes
    job_id: str | None = None


# --- strategies ------------------------------------------------------------------------

# JSON values orjson writes back exactly: no NaN/Infinity, integers within 64 bits.
SAFE_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SAFE_LEAVES = (
    st.none() | st.booleans() | SAFE_INTS | st.floats(allow_nan=False, allow_infinity=False)
) | st.text(max_size=20)
SAFE_JSON = st.recursive(
    SAFE_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BIG_INTS = st.integers(min_value=2**64, max_value=10**80) | st.integers(
    min_value=-(10**80), max_value=-(2**63) - 1
)
PRIORITIES = st.integers(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX)


def encode(value: dict[str, Any], style: int) -> bytes:
    """The same JSON object written the ways a producer might write it."""
    if style == 0:
        return orjson.dumps(value)
    if style == 1:
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False, indent=1).encode()


@st.composite
def envelope(draw: st.DrawFn, job_id: str, batch: str) -> dict[str, Any]:
    """A valid envelope for `system.echo`, fields in any order, optional parts drawn."""
    fields: dict[str, Any] = {
        "id": job_id,
        "batch": batch,
        "task": "system.echo",
        "args": draw(st.lists(SAFE_JSON, max_size=4)),
        "dispatched_at": time.time() - draw(st.floats(min_value=0, max_value=10_000)),
    }
    meta: dict[str, Any] = {}
    if draw(st.booleans()):
        meta["pool"] = "metal"
    if draw(st.booleans()):
        meta["owner"] = draw(SAFE_JSON)
    if draw(st.booleans()):
        meta["rate_limit"] = draw(st.lists(st.text(max_size=10), max_size=2))
    if draw(st.booleans()):
        meta["timeout"] = draw(st.floats(min_value=5, max_value=60))
    if draw(st.booleans()):
        meta["priority"] = draw(PRIORITIES)
    if meta or draw(st.booleans()):
        fields["meta"] = meta
    if draw(st.booleans()):
        fields["rate_paid"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        fields["priority"] = draw(PRIORITIES)  # as `dispatch --priority` writes it
    order = draw(st.permutations(list(fields)))
    return {key: fields[key] for key in order}


# One defect each, on an otherwise valid envelope: (field, value); None deletes the field.
WRONG_FIELDS: list[tuple[str, Any]] = [
    ("id", 5), ("id", ""), ("id", "has space"), ("id", "x" * 201), ("id", None), ("id", ["a"]),
    ("batch", 5), ("batch", None), ("batch", {"a": 1}),
    ("task", 5), ("task", None), ("task", ["system.echo"]), ("task", True),
    ("args", {"a": 1}), ("args", "abc"), ("args", 1), ("args", None),
    ("kwargs", [1]), ("kwargs", "x"), ("kwargs", 1),
    ("meta", []), ("meta", "metal"), ("meta", 3), ("meta", {"pool": 5}),
    ("meta", {"pool": None}), ("meta", {"timeout": -1}), ("meta", {"timeout": 0}),
    ("meta", {"timeout": math.nan}), ("meta", {"max_tries": 0}), ("meta", {"max_tries": 1.5}),
    ("meta", {"rate_limit": "abc"}), ("meta", {"rate_limit": [1]}), ("meta", {"priority": "high"}),
    ("meta", {"priority": PRIORITY_MAX + 1}), ("meta", {"priority": PRIORITY_MIN - 1}),
    ("meta", {"priority": 1.5}), ("meta", {"priority": True}), ("meta", {"priority": 2**70}),
    ("priority", PRIORITY_MAX + 1), ("priority", -(2**70)), ("priority", "high"),
    ("dispatched_at", "soon"), ("dispatched_at", None), ("dispatched_at", [1]),
    ("dispatched_at", {}), ("rate_paid", "maybe"), ("rate_paid", 5),
    ("evil", 1), ("__class__", "os.system"),
]  # fmt: skip
MISSING_FIELDS = ["id", "batch", "task", "args", "dispatched_at"]
HOSTILE_TASKS = [
    "os.system", "builtins.eval", "subprocess.run", "system.slep", "System.echo", "",
    "__import__('os').system", "workers.tasks.system.echo", "system.echo ", "system",
]  # fmt: skip


def garbage() -> st.SearchStrategy[Case]:
    """Anything that is not an envelope at all."""
    not_objects = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=10,
    ).map(lambda value: json.dumps(value).encode())
    objects = st.dictionaries(
        st.text(max_size=10).filter(lambda key: key != "task"), SAFE_JSON, max_size=5
    ).map(lambda value: orjson.dumps(value))
    literals = st.sampled_from(
        [
            b"", b" ", b"NaN", b"Infinity", b"-Infinity", b"null", b"{}", b"[]", b"{", b"}",
            b"\xef\xbb\xbf{}", b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 300 + b"1" + b"}" * 300, b'{"task": "system.echo", "args": [1],}',
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00N.",  # a pickle of None
        ]
    )  # fmt: skip
    # Random bytes, but never a job: hypothesis mixes in the constants it finds in this
    # repository, such as a bare line from the README ('{"task":"system.echo",…}\n').
    noise = st.binary(max_size=300).filter(lambda raw: not _names_a_task(raw))
    payloads = noise | not_objects | objects | literals
    return payloads.map(lambda raw: Case("invalid_payload", raw))


def _names_a_task(raw: bytes) -> bool:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and "task" in value


@st.composite
def bad_envelope(draw: st.DrawFn, job_id: str, batch: str) -> Case:
    """An envelope with one wrong, missing or extra field."""
    fields = dict(draw(envelope(job_id, batch)))
    if draw(st.booleans()):
        del fields[draw(st.sampled_from(MISSING_FIELDS))]
    else:
        name, value = draw(st.sampled_from(WRONG_FIELDS))
        fields[name] = value
    return Case("invalid_payload", encode(fields, draw(st.integers(1, 2))))


@st.composite
def unknown_task(draw: st.DrawFn, job_id: str, batch: str) -> Case:
    fields = draw(envelope(job_id, batch))
    names = st.sampled_from(HOSTILE_TASKS) | st.text(max_size=30)
    fields["task"] = draw(names.filter(lambda name: name not in KNOWN_TASKS))
    expect = NO_WORKER if TASK_NAME.match(fields["task"]) else "invalid_payload"
    return Case(expect, encode(fields, draw(st.integers(0, 2))), job_id)


@st.composite
def unknown_pool(draw: st.DrawFn, job_id: str, batch: str) -> Case:
    fields = draw(envelope(job_id, batch))
    pool = draw(
        (st.sampled_from(["gpu", "METAL", "metal ", "cloud\x00"]) | st.text(min_size=1)).filter(
            lambda name: name not in POOLS
        )
    )
    fields["meta"] = {**fields.get("meta", {}), "pool": pool}
    return Case("unknown_pool", encode(fields, draw(st.integers(0, 2))), job_id)


@st.composite
def unserializable(draw: st.DrawFn, job_id: str, batch: str) -> Case:
    """A valid envelope holding an integer beyond 64 bits, which no arq job can carry."""
    fields = draw(envelope(job_id, batch))
    big = draw(BIG_INTS)
    place = draw(st.sampled_from(["args", "kwargs", "meta"]))
    if place == "args":
        fields["args"] = [*fields["args"], big]
    elif place == "kwargs":
        fields["kwargs"] = {"n": big}
    else:  # not meta.priority: beyond its bounds, the envelope is invalid (WRONG_FIELDS)
        fields["meta"] = {**fields.get("meta", {}), "owner": big}
    return Case("unserializable", encode(fields, draw(st.integers(1, 2))), job_id)


@st.composite
def valid(draw: st.DrawFn, job_id: str, batch: str) -> Case:
    return Case(SUCCEEDED, encode(draw(envelope(job_id, batch)), draw(st.integers(0, 2))), job_id)


@st.composite
def payloads(draw: st.DrawFn, batch: str) -> list[Case]:
    """20-50 payloads in random order, with at least one of every kind."""
    kinds = [valid, bad_envelope, unknown_task, unknown_pool, unserializable, None]
    count = draw(st.integers(min_value=20, max_value=50))
    extra = st.lists(
        st.sampled_from(kinds), min_size=count - len(kinds), max_size=count - len(kinds)
    )
    chosen = draw(st.permutations([*kinds, *draw(extra)]))
    cases = []
    for index, kind in enumerate(chosen):
        job_id = f"{batch}:{index}"
        cases.append(draw(garbage() if kind is None else kind(job_id, batch)))
    return cases


# --- the test ---------------------------------------------------------------------------


@pytest.fixture
def conducted(stack: StackFactory) -> tuple[Stack, subprocess.Popen[bytes]]:
    run = stack()
    run.worker("metal", 2)
    return run, run.conductor()


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_raw_payload_runs_or_is_dead_lettered_with_its_reason(
    conducted: tuple[Stack, subprocess.Popen[bytes]], data: st.DataObject
) -> None:
    run, conductor = conducted
    # Every example shares the stack: once one broke it, the next fails here at once, not
    # by a timeout (each of hypothesis's shrinking attempts would wait one out).
    assert all(process.poll() is None for process in run.processes), stack_state(run)
    assert not leftovers(run), stack_state(run)
    batch = f"fz{uuid.uuid4().hex[:8]}"
    cases = data.draw(payloads(batch), label="payloads")
    dead_before = run.redis.llen(run.keys.dead)
    run.redis.rpush(run.keys.backlog(BACKLOG), *[case.raw for case in cases])

    succeeded = [case for case in cases if case.expect == SUCCEEDED]
    parked = [case for case in cases if case.expect == NO_WORKER]
    bad = [case for case in cases if case.expect not in (SUCCEEDED, NO_WORKER)]

    def settled() -> bool:
        done = [r for r in run.receipts(batch) if r["status"] == SUCCEEDED]
        return (
            len(done) >= len(succeeded)
            and run.redis.llen(run.keys.dead) - dead_before >= len(bad)
            and len(waiting_for_a_worker(run, batch)) >= len(parked)
            and not leftovers(run)
        )

    def found() -> str:
        done = sorted(r["job_id"] for r in run.receipts(batch) if r["status"] == SUCCEEDED)
        missing = sorted({str(case.job_id) for case in succeeded} - set(done))
        dead = run.redis.llen(run.keys.dead) - dead_before
        return (
            f"receipts missing for {missing}, {dead} dead letters, "
            f"{len(waiting_for_a_worker(run, batch))} of {len(parked)} parked, "
            f"left over: {leftovers(run)}; {stack_state(run)}"
        )

    run.wait_for(
        settled,
        f"{len(succeeded)} receipts and {len(bad)} dead letters",
        timeout=30,
        explain=found,
    )
    time.sleep(0.3)  # anything more (a duplicate run, a late dead letter) shows up now

    assert conductor.poll() is None, run.logs[conductor.pid].read_text()[-3000:]
    assert leftovers(run) == {}
    receipts = {r["job_id"]: r for r in run.receipts(batch)}
    assert sorted(receipts) == sorted(str(case.job_id) for case in succeeded)
    assert all(r["status"] == SUCCEEDED and r["pool"] == "metal" for r in receipts.values())
    for case in succeeded:
        args = orjson.loads(case.raw)["args"]
        if len(orjson.dumps(args)) <= RESULT_LIMIT:  # larger results are kept truncated
            assert receipts[str(case.job_id)]["result"] == args

    dead = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, dead_before, -1)]
    assert {d["reason"] for d in dead} <= DEAD_REASONS
    assert sorted(d["reason"] for d in dead) == sorted(case.expect for case in bad)
    by_id = {d["job_id"]: d["reason"] for d in dead if d["job_id"] is not None}
    for case in bad:
        if case.job_id is not None:  # the payload parsed: its record names the job
            assert by_id[case.job_id] == case.expect, case
    assert all(d["error"] and isinstance(d["at"], float) for d in dead)
    unparsed = sorted(
        d["payload"]
        for d in dead
        if d["reason"] == "invalid_payload" and isinstance(d["payload"], str)
    )
    assert unparsed == sorted(c.raw.decode(errors="replace") for c in bad if c.job_id is None)
    assert sorted(waiting_for_a_worker(run, batch)) == sorted(str(c.job_id) for c in parked)


def stack_state(run: Stack) -> str:
    """What the conductor routes by and whether the processes live, for a failure."""
    workers = sorted(m.decode() for m in run.redis.smembers(run.keys.workers("metal")))
    beats = {w: run.redis.pttl(run.keys.worker("metal", w)) for w in workers}
    capacity = run.redis.hgetall(run.keys.capacity("metal"))
    exits = [p.poll() for p in run.processes]
    return f"metal heartbeats (ms left) {beats}, capacity {capacity}, process exits {exits}"


def waiting_for_a_worker(run: Stack, batch: str) -> list[str]:
    """Ids of this batch's jobs parked until a worker announces their task."""
    root = run.keys.root.replace("{", "\\{").replace("}", "\\}")
    found = []
    for key in run.redis.scan_iter(match=f"{root}:no_worker:*"):
        for raw in run.redis.lrange(key, 0, -1):
            job = orjson.loads(raw)
            if job["batch"] == batch:
                found.append(job["id"])
    return found


def leftovers(run: Stack) -> dict[str, int]:
    """Jobs still anywhere but a receipt or a dead letter: a backlog, the ready list, a
    processing, waiting or deferred list, a pool's queue or its in-flight set."""
    counts = {
        "backlog": run.redis.llen(run.keys.backlog(BACKLOG)),
        "ready": run.redis.llen(run.keys.ready),
        "deferred": run.redis.zcard(run.keys.deferred),
    }
    for pool in POOLS:
        counts[f"queue:{pool}"] = run.redis.zcard(run.keys.pool_queue(pool))
        counts[f"inflight:{pool}"] = run.redis.zcard(run.keys.inflight(pool))
    root = run.keys.root
    for pattern in (f"{root}:processing:*", f"{root}:waiting:*"):
        for key in run.redis.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}")):
            counts[key.decode()] = run.redis.llen(key)
    return {name: count for name, count in counts.items() if count}


# --- payload classes the conductor does not handle yet ---------------------------------
#
# Odd dispatch times once crashed or stalled the conductor (Infinity: a traceback; NaN:
# taken and put back forever; 1e300 or an hour ahead: a hot loop or a stall). Now
# NaN and Infinity are refused by the envelope model (dead-lettered) and a time ahead
# of the conductor's counts as now. Each case is one envelope pushed onto a backlog,
# followed half a second later by a valid job.
ODD_DISPATCH_TIMES = [
    pytest.param(
        b"Infinity",
        id="infinity",
    ),
    pytest.param(
        b"NaN",
        id="nan",
    ),
    pytest.param(
        b"1e300",
        id="far-future",
    ),
    pytest.param(
        None,
        id="an-hour-ahead",
    ),
]


@pytest.mark.parametrize("dispatched_at", ODD_DISPATCH_TIMES)
def test_an_odd_dispatch_time_neither_crashes_nor_stalls_the_conductor(
    conducted: tuple[Stack, subprocess.Popen[bytes]], dispatched_at: bytes | None
) -> None:
    run, conductor = conducted
    at = dispatched_at or str(time.time() + 3600).encode()
    odd = b'{"id":"odd:1","batch":"odd","task":"system.echo","args":[1],"dispatched_at":%s}' % at
    run.redis.rpush(run.keys.backlog(BACKLOG), odd)
    time.sleep(0.5)
    later = {"id": "odd:2", "batch": "odd", "task": "system.echo", "args": [2]}
    run.redis.rpush(
        run.keys.backlog(BACKLOG), orjson.dumps({**later, "dispatched_at": time.time()})
    )

    def settled() -> bool:
        ran = {r["job_id"] for r in run.receipts("odd") if r["status"] == SUCCEEDED}
        dead = {orjson.loads(raw)["job_id"] for raw in run.redis.lrange(run.keys.dead, 0, -1)}
        return "odd:2" in ran and "odd:1" in ran | dead and not leftovers(run)

    # a stall is for good; 15 s is only a loaded machine's slowness
    run.wait_for(settled, "the later job run and the odd one settled", timeout=15)
    assert conductor.poll() is None
