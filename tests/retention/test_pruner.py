"""The pruner against the session's real Redis: settled batches get an expiry, are archived
and then removed; running, paused and unfinished ones are never touched; `verify` reads
the archive with the same report; one pruner at a time."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import redis
import redis.asyncio

from orchestrator.keys import Keys
from orchestrator.receipts import DeadLetter, Receipt, stage
from orchestrator.retention.pruner import Pruned, Pruner
from orchestrator.settings import Settings, load_settings
from tests.conftest import CliRunner


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", **overrides)


def dispatch(run_cli: CliRunner, tmp_path: Path, name: str, jobs: int, *flags: str) -> str:
    """Dispatch `jobs` echo jobs as batch `name`; the jobs leave the backlog as a
    conductor would take them."""
    manifest = tmp_path / f"{name}.jsonl"
    manifest.write_text("".join(f'{{"task": "system.echo", "args": [{i}]}}\n' for i in range(jobs)))
    result = run_cli("dispatch", str(manifest), "--backlog", "stress", *flags)
    assert result.code == 0, result.err
    return name


def finish(url: str, keys: Keys, batch: str, line: int, status: str = "succeeded") -> None:
    anyio.run(_finish, url, keys, batch, [line], status)


def finish_all(url: str, keys: Keys, batch: str, jobs: int, failed: int = 0) -> None:
    anyio.run(_finish, url, keys, batch, list(range(1, failed + 1)), "failed")
    anyio.run(_finish, url, keys, batch, list(range(failed + 1, jobs + 1)), "succeeded")


def tick(url: str, settings: Settings, conductor: str = "c1") -> list[Pruned]:
    """One look of a conductor's pruner (its lease kept in Redis between looks)."""

    async def look() -> list[Pruned]:
        async with redis.asyncio.Redis.from_url(url) as client:
            pruner = Pruner(settings, client, conductor)
            return await pruner.tick()

    return anyio.run(look)


async def _finish(url: str, keys: Keys, batch: str, lines: list[int], status: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as client:
        for line in lines:
            await _end(client, keys, batch, line, status)


async def _end(client: redis.asyncio.Redis, keys: Keys, batch: str, line: int, status: str) -> None:
    """Write a job's end as a worker does (`receipts.stage`): a failure with its letter."""
    job_id = f"{batch}:{line}"
    receipt: Receipt = {
        "job_id": job_id, "batch": batch, "task": "system.echo", "status": status,  # type: ignore[typeddict-item]
        "pool": "metal", "worker": "w1", "attempt": 1, "started_at": time.time(),
        "ended_at": time.time(), "duration": 0.01,
        "error": None if status == "succeeded" else "boom",
    }  # fmt: skip
    dead: DeadLetter | None = None
    if status == "failed":
        envelope = {"id": job_id, "batch": batch, "task": "system.echo", "args": [line]}
        dead = {"job_id": job_id, "reason": "failed", "error": "boom", "at": time.time(),
                "payload": envelope, "receipt": receipt}  # fmt: skip
    async with client.pipeline(transaction=True) as pipe:
        stage(pipe, keys, receipt, finished=status != "retrying", dead=dead)
        await pipe.execute()


def batch_keys(keys: Keys, batch: str) -> list[str]:
    return [keys.batch(batch), keys.receipts(batch), keys.running(batch), keys.cancelled(batch)]


def archive_lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as lines:
        return [orjson.loads(line) for line in lines]


def test_a_settled_batch_gets_an_expiry_then_is_archived_and_removed(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """First look: settled, `expires_at` set, nothing removed. Once due: one archive file
    with every receipt and its dead letters, every key of the batch gone, the batch out
    of the batches set, its dead letters still on the list (unhandled)."""
    batch = dispatch(run_cli, tmp_path, "kept_01", 30)
    finish_all(redis_url, keys, batch, 30, failed=2)
    settings = settings_for(tmp_path, batch_retention="1s")
    assert tick(redis_url, settings) == []
    record = sync_redis.hgetall(keys.batch(batch))
    settled_at = float(record[b"settled_at"])
    assert float(record[b"expires_at"]) == pytest.approx(settled_at + 1, abs=0.01)
    time.sleep(1.1)
    pruned = tick(redis_url, settings)
    assert [p.batch for p in pruned] == [batch]
    assert pruned[0].receipts == 30
    assert pruned[0].dead_letters == 2
    assert pruned[0].bytes > 0
    assert sync_redis.exists(*batch_keys(keys, batch)) == 0
    assert sync_redis.zscore(keys.batches, batch) is None
    assert sync_redis.scard(keys.pruning) == 0
    assert sync_redis.llen(keys.dead) == 2
    lines = archive_lines(tmp_path / "data" / "archive" / f"{batch}.jsonl.gz")
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "batch"
    assert kinds[-1] == "end"
    assert kinds.count("receipt") == 30
    assert kinds.count("dead_letter") == 2
    assert lines[0]["manifest"] == str((tmp_path / f"{batch}.jsonl").resolve())
    assert lines[0]["record"]["total"] == "30"
    assert not list((tmp_path / "data" / "archive").glob(".*.tmp"))


def test_verify_reads_the_archive_with_the_same_report_and_exit_code(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """`verify MANIFEST` and `verify --batch NAME` tell the same once the batch is pruned."""
    batch = dispatch(run_cli, tmp_path, "verified_01", 12)
    finish_all(redis_url, keys, batch, 12, failed=1)
    before = run_cli("verify", "--batch", batch, "--json")
    assert before.code == 1, before.err
    settings = settings_for(tmp_path, batch_retention="0.2s")
    tick(redis_url, settings)
    time.sleep(0.3)
    assert len(tick(redis_url, settings)) == 1
    assert sync_redis.exists(keys.batch(batch)) == 0
    for args in (["--batch", batch], [str(tmp_path / f"{batch}.jsonl")]):
        after = run_cli("verify", *args, "--json")
        assert after.code == 1, after.err
        old, new = orjson.loads(before.out), orjson.loads(after.out)
        archive = tmp_path / "data" / "archive" / f"{batch}.jsonl.gz"
        assert (tmp_path / new["archive"]).resolve() == archive
        for part in ("totals", "tasks", "pools", "jobs", "settled", "exit_code", "dispatch"):
            assert new[part] == old[part], part
    shown = run_cli("verify", "--batch", batch)
    assert "read from its archive" in shown.out
    assert "settled with failures: 0 failed, 1 dead-lettered of 12" in shown.out


def test_verify_without_the_manifest_counts_the_archived_jobs(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """The manifest moved away: the archive's receipts and letters are the batch."""
    batch = dispatch(run_cli, tmp_path, "moved_01", 5)
    finish_all(redis_url, keys, batch, 5)
    settings = settings_for(tmp_path, batch_retention="0.1s")
    tick(redis_url, settings)
    time.sleep(0.2)
    assert len(tick(redis_url, settings)) == 1
    (tmp_path / f"{batch}.jsonl").unlink()
    after = run_cli("verify", "--batch", batch, "--json")
    assert after.code == 0, after.err
    assert orjson.loads(after.out)["totals"]["done"] == 5


def test_running_paused_and_unfinished_batches_are_never_touched(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """A job running, a paused backlog, a job with no end yet, a job retrying: no expiry,
    nothing archived, nothing removed, however short the retention."""
    running = dispatch(run_cli, tmp_path, "running_01", 3)
    finish_all(redis_url, keys, running, 3)
    sync_redis.hset(keys.running(running), f"{running}:1", "{}")
    unfinished = dispatch(run_cli, tmp_path, "unfinished_01", 3)
    finish_all(redis_url, keys, unfinished, 2)
    retrying = dispatch(run_cli, tmp_path, "retrying_01", 2)
    finish_all(redis_url, keys, retrying, 1)
    finish(redis_url, keys, retrying, 2, "retrying")
    manifest = tmp_path / "paused_01.jsonl"
    manifest.write_text('{"task": "system.echo", "args": [1]}\n')
    assert run_cli("dispatch", str(manifest), "--backlog", "quiet").code == 0
    finish(redis_url, keys, "paused_01", 1)
    assert run_cli("pause", "quiet").code == 0
    settings = settings_for(tmp_path, batch_retention="0.05s")
    for _ in range(3):
        assert tick(redis_url, settings) == []
        time.sleep(0.1)
    for batch in (running, unfinished, retrying, "paused_01"):
        assert sync_redis.hget(keys.batch(batch), "expires_at") is None, batch
        assert sync_redis.hlen(keys.receipts(batch)) > 0
    assert not (tmp_path / "data" / "archive").exists()


def test_a_batch_that_runs_again_loses_its_expiry(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Settled, then a job of it runs again (a requeue): the expiry goes, nothing is pruned."""
    batch = dispatch(run_cli, tmp_path, "again_01", 2)
    finish_all(redis_url, keys, batch, 2)
    settings = settings_for(tmp_path, batch_retention="0.2s")
    tick(redis_url, settings)
    assert sync_redis.hget(keys.batch(batch), "expires_at") is not None
    sync_redis.hset(keys.running(batch), f"{batch}:1", "{}")
    time.sleep(0.3)
    assert tick(redis_url, settings) == []
    assert sync_redis.hget(keys.batch(batch), "expires_at") is None
    assert sync_redis.hlen(keys.receipts(batch)) == 2


def test_dispatch_keep_overrides_the_retention_for_its_batch(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """`--keep never` keeps the batch; `--keep 2h` sets its own expiry; a bad one is one line."""
    forever = dispatch(run_cli, tmp_path, "forever_01", 1, "--keep", "never")
    hours = dispatch(run_cli, tmp_path, "hours_01", 1, "--keep", "2h")
    finish_all(redis_url, keys, forever, 1)
    finish_all(redis_url, keys, hours, 1)
    settings = settings_for(tmp_path, batch_retention="0.05s")
    tick(redis_url, settings)
    time.sleep(0.1)
    assert tick(redis_url, settings) == []
    assert sync_redis.hget(keys.batch(forever), "expires_at") == b"never"  # type: ignore[comparison-overlap]
    record = sync_redis.hgetall(keys.batch(hours))
    assert float(record[b"expires_at"]) - float(record[b"settled_at"]) == pytest.approx(7200)
    bad = run_cli("dispatch", str(tmp_path / "hours_01.jsonl"), "--backlog", "x", "--keep", "2y")
    assert bad.code == 2
    assert "'2y' is not a duration" in bad.err


def test_only_the_lease_holder_prunes(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Two conductors' pruners: the one holding the lease acts, the other does nothing."""
    batch = dispatch(run_cli, tmp_path, "leased_01", 2)
    finish_all(redis_url, keys, batch, 2)
    settings = settings_for(tmp_path, batch_retention="0.1s")
    tick(redis_url, settings, "c1")
    time.sleep(0.2)
    assert tick(redis_url, settings, "c2") == []
    assert sync_redis.get(keys.retention_lease) == b"c1"
    assert sync_redis.exists(keys.batch(batch)) == 1
    assert len(tick(redis_url, settings, "c1")) == 1


def test_a_removal_cut_short_is_finished_by_the_next_look(
    sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """A pruner that died after taking a batch out of sight: the next one deletes its
    trash, in steps, to the last key."""
    sync_redis.hset(keys.trash("gone_01", "receipts"), mapping={f"j{i}": "{}" for i in range(2500)})
    sync_redis.sadd(keys.trash("gone_01", "batch_ids"), *[f"j{i}" for i in range(1500)])
    sync_redis.hset(keys.trash("gone_01", "batch"), "total", "2500")
    sync_redis.sadd(keys.pruning, "gone_01")
    tick(redis_url, settings_for(tmp_path))
    assert (
        sync_redis.exists(*(keys.trash("gone_01", p) for p in ("receipts", "batch_ids", "batch")))
        == 0
    )
    assert sync_redis.scard(keys.pruning) == 0


def test_export_writes_the_archive_on_demand_and_removes_nothing(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """`export --batch` writes what the pruner would; an unknown batch is one line."""
    batch = dispatch(run_cli, tmp_path, "exported_01", 4)
    finish_all(redis_url, keys, batch, 4, failed=1)
    target = tmp_path / "out" / "copy.jsonl.gz"
    result = run_cli("export", "--batch", batch, "--to", str(target))
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {target}: 4 receipts, 1 dead letters")
    kinds = [line["kind"] for line in archive_lines(target)]
    assert kinds.count("receipt") == 4
    assert kinds.count("dead_letter") == 1
    assert sync_redis.hlen(keys.receipts(batch)) == 4
    missing = run_cli("export", "--batch", "nothing_01")
    assert missing.code == 2
    assert missing.err.strip() == "orchestrator: error: no batch named 'nothing_01' in this Redis"


def test_status_and_the_dashboard_show_when_a_settled_batch_leaves_redis(
    run_cli: CliRunner, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """`status --json` and the table give the expiry; the dashboard's batch reads it too."""
    from orchestrator.status.batch_detail import read_batch

    batch = dispatch(run_cli, tmp_path, "shown_01", 2)
    forever = dispatch(run_cli, tmp_path, "always_01", 1, "--keep", "never")
    finish_all(redis_url, keys, batch, 2)
    finish_all(redis_url, keys, forever, 1)
    tick(redis_url, settings_for(tmp_path, batch_retention="2h"))
    status = run_cli("status", "--json")
    assert status.code == 0, status.err
    shown = {b["id"]: b for b in orjson.loads(status.out)["batches"]}
    assert shown[batch]["expires_at"] == pytest.approx(time.time() + 7200, abs=60)
    assert shown[batch]["kept_forever"] is False
    assert shown[forever]["expires_at"] is None
    assert shown[forever]["kept_forever"] is True
    table = run_cli("status")
    assert "expires" in table.out
    assert "in 1h" in table.out
    assert "never" in table.out

    async def detail() -> float | None:
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            found = await read_batch(client, keys, batch)
            assert found is not None
            return found.to_json()["expires_at"]  # type: ignore[no-any-return]

    assert anyio.run(detail) == pytest.approx(shown[batch]["expires_at"])


def test_a_batch_pruned_again_keeps_the_earlier_archive_beside_it(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """The same manifest dispatched again after its batch was pruned is new work; once
    that is pruned too, the first archive is kept, named by its time."""
    settings = settings_for(tmp_path, batch_retention="0.1s")
    for _ in range(2):
        batch = dispatch(run_cli, tmp_path, "twice_01", 2)
        finish_all(redis_url, keys, batch, 2)
        tick(redis_url, settings)
        time.sleep(0.2)
        assert len(tick(redis_url, settings)) == 1
    archives = sorted(p.name for p in (tmp_path / "data" / "archive").glob("twice_01*"))
    assert len(archives) == 2
    assert "twice_01.jsonl.gz" in archives


def test_nothing_is_removed_when_the_archive_cannot_be_written(
    run_cli: CliRunner, sync_redis: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """An archive_dir that cannot be written (a read-only root filesystem, a file in the
    way): the batch and the dead letters stay in Redis, and the pruner says why."""
    from structlog.testing import capture_logs

    (tmp_path / "in-the-way").write_text("")
    settings = settings_for(
        tmp_path, batch_retention="0.1s", dead_letter_cap=1,
        archive_dir=str(tmp_path / "in-the-way" / "archive"),
    )  # fmt: skip
    batch = dispatch(run_cli, tmp_path, "stuck_01", 3)
    finish_all(redis_url, keys, batch, 3, failed=2)
    tick(redis_url, settings)
    time.sleep(0.2)
    with capture_logs() as logs:
        assert tick(redis_url, settings) == []
    failed = [log for log in logs if log["event"] == "archive_failed"]
    assert {log.get("batch") for log in failed} == {None, batch}  # the letters, the batch
    assert sync_redis.hlen(keys.receipts(batch)) == 3
    assert sync_redis.llen(keys.dead) == 2
