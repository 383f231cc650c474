"""Dispatch against a real Redis: what a user sees, and what lands on the backlog."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from orchestrator.keys import Keys
from tests.conftest import UNREACHABLE, CliRunner

GOOD = '{"task": "system.echo", "args": ["hi"]}'
BACKLOG = "backlog:stress"


def manifest(tmp_path: Path, *lines: str, name: str = "batch_a_01.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def backlog(sync_redis: redis.Redis, keys: Keys, name: str = BACKLOG) -> list[dict[str, object]]:
    return [orjson.loads(raw) for raw in sync_redis.lrange(keys.backlog(name), 0, -1)]


def test_dispatch_queues_envelopes_in_manifest_order(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = manifest(
        tmp_path,
        '{"task": "system.sleep", "args": [1.5], "meta": {"pool": "metal", "owner": "ana"}}',
        '{"task": "system.echo", "args": [1, "two"], "id": "given-id"}',
    )
    result = run_cli("dispatch", str(path), "--backlog", "stress")
    assert result.code == 0, result.err
    assert result.out == f"queued 2 jobs of {path} (batch batch_a_01) on backlog:stress\n"
    first, second = backlog(sync_redis, keys)
    assert first["id"] == "batch_a_01:1"
    assert first["meta"] == {"pool": "metal", "owner": "ana"}
    assert (first["task"], first["args"], first["batch"]) == ("system.sleep", [1.5], "batch_a_01")
    assert second["id"] == "given-id"
    record = sync_redis.hgetall(keys.batch("batch_a_01"))
    assert record[b"manifest"] == str(path.resolve()).encode()
    assert (record[b"backlog"], record[b"total"], record[b"queued"]) == (
        b"backlog:stress",
        b"2",
        b"2",
    )
    assert record[b"complete"] == b"1"
    assert sync_redis.zscore(keys.batches, "batch_a_01") is not None


def test_dispatching_twice_queues_nothing_new_and_says_so(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = manifest(tmp_path, GOOD, GOOD, GOOD)
    assert run_cli("dispatch", str(path), "--backlog", BACKLOG).code == 0
    again = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert again.code == 0
    assert again.out.startswith("nothing new: all 3 jobs of")
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 3


def test_an_interrupted_dispatch_is_finished_by_dispatching_again(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = manifest(tmp_path, *[GOOD] * 2500)
    assert run_cli("dispatch", str(path), "--backlog", BACKLOG).code == 0
    # Rewind to where a crash after the first 1000 jobs would have left the batch.
    sync_redis.ltrim(keys.backlog(BACKLOG), 0, 999)
    sync_redis.hset(keys.batch("batch_a_01"), "queued", 1000)
    again = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert again.out.startswith(f"queued 1500 jobs of {path}"), again.out
    assert "1000 were already queued" in again.out
    ids = [job["id"] for job in backlog(sync_redis, keys)]
    assert ids == [f"batch_a_01:{n}" for n in range(1, 2501)]


def test_same_name_with_other_content_is_refused(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    first = manifest(tmp_path, GOOD)
    assert run_cli("dispatch", str(first), "--backlog", BACKLOG).code == 0
    (tmp_path / "elsewhere").mkdir()
    other = manifest(tmp_path / "elsewhere", GOOD, GOOD)
    result = run_cli("dispatch", str(other), "--backlog", BACKLOG)
    assert result.code == 2
    assert "already dispatched from a different manifest" in result.err
    assert "--batch" in result.err
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 1
    renamed = run_cli("dispatch", str(other), "--backlog", BACKLOG, "--batch", "batch_a_01_b")
    assert renamed.code == 0
    assert [job["id"] for job in backlog(sync_redis, keys)][1:] == [
        "batch_a_01_b:1",
        "batch_a_01_b:2",
    ]


def test_same_batch_to_another_backlog_is_refused(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = manifest(tmp_path, GOOD)
    assert run_cli("dispatch", str(path), "--backlog", BACKLOG).code == 0
    result = run_cli("dispatch", str(path), "--backlog", "backlog:other")
    assert result.code == 2
    assert "was dispatched to backlog:stress, not backlog:other" in result.err
    assert sync_redis.llen(keys.backlog("backlog:other")) == 0


def test_dry_run_validates_and_queues_nothing(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = manifest(tmp_path, GOOD, GOOD)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--dry-run")
    assert result.code == 0
    assert "is valid: 2 jobs; dry run, nothing queued" in result.out
    assert sync_redis.keys(f"{{{keys.namespace}}}:*") == []


BAD_MANIFESTS = [
    pytest.param(None, "missing.jsonl: no such file", id="missing-file"),
    pytest.param([], "the manifest holds no jobs", id="empty-file"),
    pytest.param([GOOD, "{not json"], ":2: json: invalid JSON", id="invalid-json"),
    pytest.param(
        [GOOD, '{"task": "system.nope", "args": []}'], ":2: task: unknown task", id="unknown-task"
    ),
    pytest.param(
        [GOOD, '{"task": "system.echo", "args": {"a": 1}}'],
        ":2: args: Input should be",
        id="wrong-type",
    ),
    pytest.param(
        [GOOD, '{"task": "system.sleep", "args": []}'],
        ":2: args: system.sleep: missing",
        id="arity",
    ),
    pytest.param(
        [GOOD, '{"task": "system.echo", "args": ["' + "x" * 300 + '"]}'],
        ":2: line: longer than",
        id="long-line",
    ),
    pytest.param(
        [GOOD, '{"task": "system.echo", "args": [], "meta": []}'],
        ":2: meta: Input should be",
        id="bad-meta",
    ),
]


@pytest.mark.parametrize(("lines", "message"), BAD_MANIFESTS)
def test_bad_manifest_is_one_line_exit_2_and_nothing_queued(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[str] | None,
    message: str,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_LINE_BYTES", "200")
    sync_redis.rpush(keys.backlog(BACKLOG), b"earlier work")
    path = tmp_path / "missing.jsonl" if lines is None else manifest(tmp_path, *lines)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith(f"orchestrator: error: {path}")
    assert message in result.err
    assert sync_redis.lrange(keys.backlog(BACKLOG), 0, -1) == [b"earlier work"]
    assert not sync_redis.exists(keys.batch(path.stem))


def test_unreachable_redis_is_one_line_and_exit_69(run_cli: CliRunner, tmp_path: Path) -> None:
    path = manifest(tmp_path, GOOD)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--redis-url", UNREACHABLE)
    assert result.code == 69
    assert result.err.startswith("orchestrator: error: cannot reach Redis at redis://127.0.0.1:1/0")
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err


def test_invalid_backlog_name_is_a_usage_error(run_cli: CliRunner, tmp_path: Path) -> None:
    path = manifest(tmp_path, GOOD)
    result = run_cli("dispatch", str(path), "--backlog", "not valid")
    assert result.code == 2
    assert "invalid backlog name 'not valid'" in result.err


def test_dispatch_logs_a_json_event_with_manifest_and_backlog(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    path = manifest(tmp_path, GOOD)
    result = run_cli("-v", "dispatch", str(path), "--backlog", BACKLOG)
    events = [orjson.loads(line) for line in result.err.splitlines()]
    (event,) = [e for e in events if e["event"] == "dispatched"]
    assert event["manifest"] == str(path)
    assert event["backlog"] == BACKLOG
    assert event["queued"] == 1
    assert event["level"] == "info"


@pytest.mark.parametrize(
    ("literal", "field"), [("NaN", "args.1"), ("Infinity", "args.1"), (str(2**64), "args.1")]
)
def test_values_the_system_cannot_carry_are_refused_at_dispatch(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    literal: str,
    field: str,
) -> None:
    path = manifest(tmp_path, GOOD, f'{{"task": "system.echo", "args": [1, {literal}]}}')
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert result.code == 2
    assert f":2: {field}: NaN, Infinity and numbers beyond 64 bits" in result.err
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 0


def test_a_pool_that_is_not_configured_is_refused_at_dispatch(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """A `meta.pool` typo is one line at dispatch, not a dead letter at run time."""
    path = manifest(tmp_path, GOOD, '{"task": "system.echo", "args": [], "meta": {"pool": "metl"}}')
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"orchestrator: error: {path}:2: meta.pool: 'metl' is not a configured pool "
        "(metal, cloud); did you mean 'metal'?\n"
    )
    assert sync_redis.keys(f"{{{keys.namespace}}}:*") == []


def test_the_pools_a_manifest_may_pin_are_the_configured_ones(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check reads the configuration, not a fixed list: gpu is fine, cloud is not."""
    pools = '[{"name": "metal", "order": 0}, {"name": "gpu", "order": 1}]'
    monkeypatch.setenv("ORCHESTRATOR_POOLS", pools)
    gpu = manifest(tmp_path, '{"task": "system.echo", "args": [], "meta": {"pool": "gpu"}}')
    assert run_cli("dispatch", str(gpu), "--backlog", BACKLOG).code == 0
    cloud = manifest(
        tmp_path, '{"task": "system.echo", "args": [], "meta": {"pool": "cloud"}}', name="c.jsonl"
    )
    refused = run_cli("dispatch", str(cloud), "--backlog", BACKLOG)
    assert refused.code == 2
    assert refused.err.endswith(":1: meta.pool: 'cloud' is not a configured pool (metal, gpu)\n")
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 1


def test_an_argument_of_another_type_than_annotated_is_refused_at_dispatch(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """`system.sleep("x")` would only fail on a worker: dispatch refuses it, queues nothing."""
    path = manifest(
        tmp_path,
        '{"task": "system.sleep", "args": [2]}',
        '{"task": "system.sleep", "args": ["x"]}',
    )
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"orchestrator: error: {path}:2: args: system.sleep: argument seconds: "
        "Input should be a valid number, got 'x'\n"
    )
    assert sync_redis.keys(f"{{{keys.namespace}}}:*") == []


def test_a_manifest_with_a_byte_order_mark_is_dispatched_and_verified(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """Windows editors start UTF-8 files with a BOM: dispatch and verify both read past it."""
    path = tmp_path / "bom_01.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode() * 2)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert (result.code, result.err) == (0, "")
    assert [job["id"] for job in backlog(sync_redis, keys)] == ["bom_01:1", "bom_01:2"]
    assert backlog(sync_redis, keys)[0]["args"] == ["hi"]
    verified = run_cli("verify", str(path))
    assert verified.code == 3, verified.err  # read, and not settled yet: no manifest error
    assert "error" not in verified.err


def test_one_job_is_counted_as_one_job(run_cli: CliRunner, redis_url: str, tmp_path: Path) -> None:
    """One job is "1 job", never "1 jobs", on every path through dispatch."""
    path = manifest(tmp_path, GOOD)
    first = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert first.out == f"queued 1 job of {path} (batch batch_a_01) on {BACKLOG}\n"
    again = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert again.out == (
        f"nothing new: the 1 job of {path} (batch batch_a_01) was already on {BACKLOG}\n"
    )


def test_a_batch_name_given_by_flag_that_cannot_be_a_key_is_refused_naming_the_flag(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """`--batch ../../x` is the flag's fault: the message names --batch, nothing is queued."""
    path = manifest(tmp_path, GOOD)
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--batch", "../../x")
    assert result.code == 2
    assert result.err.startswith("orchestrator: error: --batch '../../x': a batch name is ")
    assert "file" not in result.err
    assert sync_redis.keys(f"{{{keys.namespace}}}:*") == []


def test_a_manifest_replanned_under_a_dispatched_name_says_its_content_changed(
    run_cli: CliRunner, sync_redis: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """A cleaned manifests/ hands out _01 again: say the content changed, and what to do."""
    assert run_cli("plan", "system_test", "--mode", "debug", "--count", "2").code == 0
    path = Path("manifests/system_test_debug_01.jsonl")
    assert run_cli("dispatch", str(path), "--backlog", BACKLOG).code == 0
    path.unlink()
    assert run_cli("plan", "system_test", "--mode", "debug", "--count", "3").code == 0
    result = run_cli("dispatch", str(path), "--backlog", BACKLOG)
    assert result.code == 2
    assert result.err == (
        f"orchestrator: error: the content of {path} changed since batch "
        "'system_test_debug_01' was dispatched from it; pass --batch NAME to dispatch it "
        "as a new batch\n"
    )
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 2
    renamed = run_cli("dispatch", str(path), "--backlog", BACKLOG, "--batch", "debug_again")
    assert renamed.code == 0, renamed.err
    assert sync_redis.llen(keys.backlog(BACKLOG)) == 5


def test_a_mistyped_manifest_name_is_one_line_with_the_closest_one(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """`…_1.jsonl` for `…_01.jsonl`: no such file, and the name the user meant."""
    (tmp_path / "manifests").mkdir()
    manifest(tmp_path, GOOD, name="manifests/stress_01.jsonl")
    result = run_cli("dispatch", "manifests/stress_1.jsonl", "--backlog", "stress", "--dry-run")
    assert result.code == 2
    assert result.err == (
        "orchestrator: error: manifests/stress_1.jsonl: no such file; "
        "did you mean manifests/stress_01.jsonl?\n"
    )


def test_a_mistyped_backlog_is_warned_of_with_the_closest_known_one(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    """backlog:default is configured; backlog:stress is new (close to no known name: no
    warning) and known once dispatched to; then backlog:strss is a typo of it."""
    first = run_cli("dispatch", str(manifest(tmp_path, GOOD)), "--backlog", "stress")
    assert (first.code, first.err) == (0, "")
    typo = run_cli(
        "dispatch", str(manifest(tmp_path, GOOD, name="batch_b_01.jsonl")), "--backlog", "strss"
    )
    assert typo.code == 0, typo.err  # queued all the same: conductors learn new backlogs
    assert typo.err == (
        "orchestrator: warning: backlog:strss is a new backlog; did you mean backlog:stress? "
        "(known: backlog:default, backlog:stress)\n"
    )
    again = run_cli(
        "dispatch", str(manifest(tmp_path, GOOD, name="batch_c_01.jsonl")), "--backlog", "strss"
    )
    assert again.err == ""  # known now: it has been dispatched to


def test_a_backlog_prefix_in_the_wrong_case_is_refused(
    run_cli: CliRunner, redis_url: str, tmp_path: Path
) -> None:
    result = run_cli("dispatch", str(manifest(tmp_path, GOOD)), "--backlog", "Backlog:Stress")
    assert result.code == 2
    assert "the prefix is lowercase (backlog:Stress)" in result.err
