"""Fuzzed manifests: valid lines mixed with junk, through `orchestrator dispatch`.

Whatever a manifest holds, dispatch ends in exit 0 with exactly the valid jobs queued in
order, or exit 2 with one line naming the file and the first bad line and nothing of
the batch queued — never a traceback, never half a batch.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ManifestError
from orchestrator.job import JOB, PRIORITY_MAX, PRIORITY_MIN, EnvelopeEncoder, job_count
from orchestrator.keys import Keys
from orchestrator.manifest import read_manifest
from orchestrator.registry import default_registry
from tests.conftest import CliRunner

LINE_LIMIT = 4096  # ORCHESTRATOR_MAX_LINE_BYTES for these tests
BACKLOG = "backlog:fuzz"
REGISTRY = default_registry()

VALID, INVALID, BLANK = "valid", "invalid", "blank"
# Lines whose outcome the property leaves open (none are generated since dispatch
# learned to refuse NaN, Infinity and integers beyond 64 bits; kept for new cases).
EITHER = "either"


@dataclass(frozen=True)
class Line:
    raw: bytes  # without its "\n"
    expect: str
    spec: dict[str, Any] | None = None  # what a valid line must arrive as


# --- strategies ------------------------------------------------------------------------

SAFE_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SAFE_LEAVES = (
    st.none()
    | st.booleans()
    | SAFE_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
SAFE_JSON = st.recursive(
    SAFE_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
NO_SPACE = st.text(
    st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=20
)
# Values that pass the manifest model but that the envelope cannot carry as written:
# not JSON (NaN, Infinity), or integers beyond the 64 bits orjson (and so arq) can write.
UNFAITHFUL = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"18446744073709551616",
              b"-9223372036854775809", b"1" + b"0" * 100]  # fmt: skip


@st.composite
def spec(draw: st.DrawFn, index: int) -> dict[str, Any]:
    """A valid manifest line as a dict: a real task with arguments that bind."""
    task = draw(st.sampled_from(["system.echo", "system.sleep", "system.crud"]))
    line: dict[str, Any] = {"task": task}
    if task == "system.echo":
        line["args"] = draw(st.lists(SAFE_JSON, max_size=3))
    elif task == "system.sleep":
        seconds = draw(st.floats(min_value=0, max_value=1e6) | st.integers(0, 1000))
        if draw(st.booleans()):
            line["args"] = [seconds]
        else:
            line["args"], line["kwargs"] = [], {"seconds": seconds}
    else:
        line["args"] = [draw(st.text(max_size=10)), draw(st.text(max_size=10))]
        if draw(st.booleans()):
            line["kwargs"] = {"database": draw(st.none() | st.text(max_size=10))}
    meta: dict[str, Any] = {}
    for name, values in (
        ("pool", st.sampled_from(["metal", "cloud"])),
        ("priority", st.integers(PRIORITY_MIN, PRIORITY_MAX) | st.sampled_from([-1, 0, 1])),
        ("timeout", st.floats(min_value=0.001, max_value=1e6)),
        ("max_tries", st.integers(min_value=1, max_value=100)),
        ("rate_limit", st.lists(st.text(max_size=8), max_size=2)),
        ("owner", SAFE_JSON),
    ):
        if draw(st.integers(0, 3)) == 0:
            meta[name] = draw(values)
    if meta or draw(st.integers(0, 5)) == 0:
        line["meta"] = meta
    if draw(st.booleans()):
        line["id"] = f"given-{index}-{draw(NO_SPACE)}"
    order = draw(st.permutations(list(line)))
    return {key: line[key] for key in order}


def encode(value: Any, style: int) -> bytes:
    if style == 0:
        try:
            return orjson.dumps(value)
        except TypeError:  # an integer past 64 bits (a priority out of range): JSON still
            return json.dumps(value, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@st.composite
def valid_line(draw: st.DrawFn, index: int) -> Line:
    value = draw(spec(index))
    raw = encode(value, draw(st.integers(0, 2)))
    pad = st.sampled_from([b"", b" ", b"\t", b"  \t"])
    raw = draw(pad) + raw + draw(pad) + draw(st.sampled_from([b"", b"\r"]))  # CRLF files
    return Line(raw, VALID, value)


# One defect each, on an otherwise valid line: (field, value); None deletes the field.
WRONG_FIELDS: list[tuple[str, Any]] = [
    ("task", 5), ("task", None), ("task", ["system.echo"]), ("task", True), ("task", {}),
    ("args", {"a": 1}), ("args", "abc"), ("args", 1), ("args", None),
    ("kwargs", [1]), ("kwargs", "x"), ("kwargs", 1), ("kwargs", None),
    ("meta", []), ("meta", "metal"), ("meta", 3), ("meta", None), ("meta", {"pool": 5}),
    ("meta", {"timeout": -1}), ("meta", {"timeout": 0}), ("meta", {"timeout": "soon"}),
    ("meta", {"max_tries": 0}), ("meta", {"max_tries": 1.5}), ("meta", {"priority": "high"}),
    ("meta", {"priority": PRIORITY_MAX + 1}), ("meta", {"priority": PRIORITY_MIN - 1}),
    ("meta", {"priority": 2**64}), ("meta", {"priority": 1.0}), ("meta", {"priority": True}),
    ("priority", 5),
    ("meta", {"rate_limit": "abc"}), ("meta", {"rate_limit": [1]}),
    ("id", 5), ("id", ""), ("id", "has space"), ("id", "tab\tin"), ("id", "x" * 201),
    ("id", None), ("batch", "b"), ("dispatched_at", 1.0), ("evil", 1),
]  # fmt: skip
BAD_CALLS: list[dict[str, Any]] = [
    {"task": "system.sleep", "args": []},
    {"task": "system.sleep", "args": [1, 2]},
    {"task": "system.sleep", "args": [1], "kwargs": {"seconds": 1}},
    {"task": "system.echo", "args": [], "kwargs": {"x": 1}},
    {"task": "system.crud", "args": ["only-key"]},
    {"task": "os.system", "args": ["touch /tmp/pwned"]},
    {"task": "builtins.eval", "args": ["1"]},
    {"task": "system.slep", "args": [1]},
    {"task": "", "args": []},
    {"task": "workers.tasks.system.echo", "args": []},
]


@st.composite
def near_valid_line(draw: st.DrawFn, index: int) -> Line:
    """A line one mistake away from valid."""
    value = dict(draw(spec(index)))
    kind = draw(st.integers(0, 7))
    if kind == 0:
        del value[draw(st.sampled_from(["task", "args"]))]
    elif kind == 1:
        name, wrong = draw(st.sampled_from(WRONG_FIELDS))
        value[name] = wrong
    elif kind == 2:
        value = draw(st.sampled_from(BAD_CALLS))
    elif kind == 3:
        unknown = draw(st.text(max_size=20).filter(lambda name: name not in REGISTRY))
        value["task"] = unknown
    elif kind == 4:
        value["args"] = ["[" * 300 + "]" * 300]  # a string: valid; made deep below
        raw = (
            encode(value, 0)
            .replace(b'"' + b"[" * 300, b"[" * 300)
            .replace(b"]" * 300 + b'"', b"]" * 300)
        )
        return Line(raw, INVALID)
    elif kind == 5:
        raw = encode(value, draw(st.integers(0, 2)))
        cut = draw(st.integers(min_value=1, max_value=len(raw) - 1))
        return Line(raw[:cut], INVALID)  # truncated mid-object
    elif kind == 6:
        raw = encode(value, 0)
        damage = st.sampled_from([
            (b"\xef\xbb\xbf", b""), (b"", b"}"), (b"", b"x"), (b"", b","), (b"\x00", b""),
            (b"", b"\x0b"), (b"", b"\x0c"), (b"", b"\x00"), (b"", b"\xc2\xa0"),
        ])  # fmt: skip
        before, after = draw(damage)
        return Line(before + raw + after, INVALID)
    else:
        raw = encode(value, 0)
        # Bytes that are not UTF-8 inside a string.
        raw = raw.replace(b'"task"', b'"ta\xffsk"', 1)
        return Line(raw, INVALID)
    return Line(encode(value, draw(st.integers(0, 2))), INVALID)


@st.composite
def unfaithful_line(draw: st.DrawFn) -> Line:
    """A valid system.echo call holding a value the envelope cannot carry as written."""
    literal = draw(st.sampled_from(UNFAITHFUL))
    where = draw(st.sampled_from(["args", "owner"]))
    if where == "args":
        raw = b'{"task": "system.echo", "args": [1, %s]}' % literal
    else:
        raw = b'{"task": "system.echo", "args": [], "meta": {"owner": %s}}' % literal
    return Line(raw, INVALID)


def junk_line() -> st.SearchStrategy[Line]:
    """Not a manifest line at all: random bytes, JSON that is no object, other objects."""
    no_newline = st.binary(max_size=200).map(lambda raw: raw.replace(b"\n", b""))
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode())
    objects = st.dictionaries(
        st.text(max_size=8).filter(lambda key: key != "task"), SAFE_JSON, max_size=4
    ).map(orjson.dumps)
    literals = st.sampled_from([b"NaN", b"Infinity", b"null", b"{}", b"[]", b"{", b"}", b"-"])
    return (no_newline | values | objects | literals).map(
        lambda raw: Line(raw, BLANK if not raw or raw.isspace() else INVALID)
    )


def blank_line() -> st.SearchStrategy[Line]:
    return st.sampled_from([b"", b" ", b"\t", b"\r", b"  \r", b"\x0b", b"\x0c"]).map(
        lambda raw: Line(raw, BLANK)
    )


def long_line() -> st.SearchStrategy[Line]:
    """A valid line, but longer than the line limit."""
    return st.integers(min_value=LINE_LIMIT, max_value=LINE_LIMIT + 50).map(
        lambda size: Line(b'{"task": "system.echo", "args": ["' + b"x" * size + b'"]}', INVALID)
    )


@st.composite
def manifest(draw: st.DrawFn, batch: str) -> tuple[bytes, list[Line]]:
    """Lines in a file: mostly valid, sometimes junk; LF or CRLF; final newline or not."""
    count = draw(st.integers(min_value=0, max_value=15))
    lines: list[Line] = []
    junk_odds = draw(st.sampled_from([0, 0, 5, 25, 60]))  # percent chance a line is bad
    for index in range(count):
        roll = draw(st.integers(0, 99))
        if roll < junk_odds:
            kind = draw(st.integers(0, 4))
            if kind == 0:
                lines.append(draw(junk_line()))
            elif kind == 1:
                lines.append(draw(near_valid_line(index)))
            elif kind == 2:
                lines.append(draw(long_line()))
            elif kind == 3:
                lines.append(draw(unfaithful_line()))
            else:
                lines.append(duplicate_or_reserved(draw, lines, batch, index))
        elif roll < junk_odds + 10:
            lines.append(draw(blank_line()))
        else:
            lines.append(draw(valid_line(index)))
    body = b"\n".join(line.raw for line in lines)
    if lines and draw(st.booleans()):
        body += b"\n"
    return body, lines


def duplicate_or_reserved(draw: st.DrawFn, lines: list[Line], batch: str, index: int) -> Line:
    """A valid call whose id repeats an earlier one, or takes the form of derived ids."""
    taken = [line.spec["id"] for line in lines if line.spec and "id" in line.spec]
    job_id = draw(st.sampled_from(taken)) if taken else f"{batch}:{index + 1}"
    return Line(orjson.dumps({"task": "system.echo", "args": [], "id": job_id}), INVALID)


# --- the oracle ------------------------------------------------------------------------


def first_bad(lines: list[Line]) -> tuple[set[int], bool]:
    """The line numbers dispatch may name (an unfaithful line before the first invalid
    one, or that invalid one), and whether the manifest has any job at all."""
    allowed: set[int] = set()
    has_jobs = False
    for number, line in enumerate(lines, start=1):
        expect = INVALID if len(line.raw) > LINE_LIMIT else line.expect
        if expect == BLANK:
            continue
        has_jobs = True
        if expect == EITHER:
            allowed.add(number)
        elif expect == INVALID:
            allowed.add(number)
            return allowed, has_jobs
    return allowed, has_jobs


def comparable(value: Any) -> Any:
    """JSON values with NaN made equal to itself."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    return value


def levels_of(client: redis.Redis, keys: Keys) -> dict[int, list[bytes]]:
    """The backlog's jobs on each priority level in its levels set, and on level 0."""
    used = {int(level) for level in client.zrange(keys.backlog_levels(BACKLOG), 0, -1)}
    return {level: client.lrange(keys.backlog_level(BACKLOG, level), 0, -1) for level in {0, *used}}


def in_manifest_order(new: dict[int, list[bytes]], lines: list[Line]) -> list[bytes]:
    """The jobs queued, in manifest order: each line's from the list of its priority
    level, in order there too; none left over on any level."""
    left = {level: list(jobs) for level, jobs in new.items()}
    ordered = []
    for line in lines:
        level = (line.spec or {}).get("meta", {}).get("priority", 0)
        assert left.get(level), f"no job queued on level {level} for {line}"
        ordered.append(left[level].pop(0))
    assert not any(left.values()), left
    return ordered


# --- the tests --------------------------------------------------------------------------


@pytest.fixture
def line_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("ORCHESTRATOR_MAX_LINE_BYTES", str(LINE_LIMIT))
    return LINE_LIMIT


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_dispatch_queues_all_valid_jobs_in_order_or_nothing(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    line_limit: int,
    data: st.DataObject,
) -> None:
    batch = f"mf{uuid.uuid4().hex[:10]}"
    body, lines = data.draw(manifest(batch), label="manifest")
    path = tmp_path / f"{batch}.jsonl"
    path.write_bytes(body)
    before = levels_of(sync_redis, keys)
    started = time.time()

    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--batch", batch)

    assert "Traceback" not in result.err
    assert result.code in (0, 2), result.err
    field = result.err.split(": ")[3:4]  # "orchestrator: error: PATH:LINE: FIELD: …"
    event(f"exit {result.code}" + (f": {field[0]}" if result.code and field else ""))
    after = levels_of(sync_redis, keys)
    new = {level: jobs[len(before.get(level, [])) :] for level, jobs in after.items()}
    assert not list(sync_redis.scan_iter(match=f"\\{{{keys.namespace}\\}}:staging:*"))
    allowed, has_jobs = first_bad(lines)
    if result.code == 2:
        assert result.out == ""
        assert result.err.endswith("\n")
        assert result.err.count("\n") == 1, result.err
        if has_jobs:
            named = [f"orchestrator: error: {path}:{n}: " for n in sorted(allowed)]
            assert result.err.startswith(tuple(named)), (result.err, allowed)
        else:
            assert result.err == f"orchestrator: error: {path}: the manifest holds no jobs\n"
        assert not any(new.values())
        assert not sync_redis.exists(keys.batch(batch))
        return

    # Accepted: only possible when no line was invalid (unfaithful ones were taken).
    assert has_jobs
    assert all(lines[n - 1].expect == EITHER for n in allowed), allowed
    jobs = [
        (number, line)
        for number, line in enumerate(lines, start=1)
        if line.expect in (VALID, EITHER) and len(line.raw) <= LINE_LIMIT
    ]
    assert result.out == f"queued {job_count(len(jobs))} of {path} (batch {batch}) on {BACKLOG}\n"
    queued = in_manifest_order(new, [line for _, line in jobs])
    for raw, (number, line) in zip(queued, jobs, strict=True):
        envelope = JOB.validate_json(raw)  # the conductor's model takes it as it is
        assert envelope["batch"] == batch
        assert started <= envelope["dispatched_at"] <= time.time()
        if line.spec is None:  # an unfaithful line: compared as parsed by the same model
            assert envelope["id"] == f"{batch}:{number}"
            continue
        expected = dict(line.spec)
        assert envelope["id"] == expected.pop("id", f"{batch}:{number}")
        got = {key: value for key, value in envelope.items() if key in expected}
        assert comparable(got) == comparable(expected)
        assert set(envelope) == {*expected, "id", "batch", "dispatched_at"}
    record = sync_redis.hgetall(keys.batch(batch))
    assert record[b"total"] == record[b"queued"] == str(len(jobs)).encode()


READER_PIECES = st.sampled_from(
    [
        b"", b"\r", b" ", b"{", b"NaN", b"[]", b"\xff", b"\x0c",
        b'{"task": "system.echo", "args": []}',
        b'{"task": "system.echo", "args": [], "id": "a"}',
        b'{"task": "system.echo", "args": [], "id": "b:1"}',
        b'{"task": "os.system", "args": []}',
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    body=st.binary(max_size=600)
    | st.lists(READER_PIECES | st.binary(max_size=40), max_size=12).map(b"\n".join),
    limit=st.sampled_from([1, 16, 64, 4096]),
)
def test_read_manifest_raises_only_manifest_error(body: bytes, limit: int) -> None:
    """No bytes make the reader fail any other way, and what it yields is sound: an
    envelope spliced from each line is one the conductor's model accepts as that line."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "b.jsonl"
        path.write_bytes(body)
        problem: ManifestError | None = None
        try:
            lines = list(read_manifest(path, REGISTRY, "b", limit))
        except ManifestError as exc:
            problem = exc
    if problem is not None:
        assert problem.message.startswith(str(path))
        assert "\n" not in problem.message
        return
    assert lines
    numbers = [line.number for line in lines]
    assert numbers == sorted(set(numbers))
    encoder = EnvelopeEncoder("b", 1.5)
    for line in lines:
        assert len(line.raw) <= limit
        envelope = JOB.validate_json(encoder.encode(line.raw, line.job_id, line.derived_id))
        assert envelope["id"] == line.job_id
        assert (envelope["batch"], envelope["dispatched_at"]) == ("b", 1.5)
        parsed: dict[str, Any] = dict(envelope)
        assert comparable({key: parsed[key] for key in line.spec}) == comparable(dict(line.spec))


@pytest.mark.parametrize("literal", UNFAITHFUL)
def test_dispatch_refuses_values_the_conductor_cannot_forward_faithfully(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path, literal: bytes
) -> None:
    path = tmp_path / "unfaithful_01.jsonl"
    path.write_bytes(b'{"task": "system.echo", "args": [%s]}\n' % literal)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert result.code == 2
    assert result.err.startswith(f"orchestrator: error: {path}:1: args")
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 0
