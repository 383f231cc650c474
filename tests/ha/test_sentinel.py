"""Redis Sentinel, for real: a master, a replica and three sentinels; a conductor and two
workers reach Redis only through a `redis+sentinel://` URL, under a shared rate limit;
the master is SIGKILLed
mid-batch. Every process follows the failover by itself: the batch ends all succeeded,
nothing exits, and `status` and `verify` answer through the same URL."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
import redis

from orchestrator.connection import connect
from orchestrator.settings import load_settings
from tests.ha.topologies import SentinelSet, until, until_all_succeeded
from tests.live_stack import Stack, write_manifest

pytestmark = pytest.mark.chaos
JOBS = 120


def test_a_batch_outlives_the_master_through_a_sentinel_url(
    sentinels: SentinelSet, namespace: str, tmp_path: Path
) -> None:
    assert sentinels.replica is not None
    # A shared rate limit too: its bucket lives in Redis and must carry on after the switch.
    limits = {"task:system.sleep": {"rate": 30, "burst": 5}}
    run = sentinels.stack(namespace, tmp_path, {"rate_limits": limits})
    try:
        run.worker("metal", 4)
        run.worker("metal", 4)
        run.conductor()
        sleepers = [{"task": "system.sleep", "args": [0.3]} for _ in range(JOBS)]
        run.dispatch(write_manifest(tmp_path / "failover_01.jsonl", sleepers))
        # dispatch returned once the replica had the batch (WAIT): a master that dies
        # now loses none of it.
        with redis.Redis(port=sentinels.replica.port) as replica:
            assert replica.hlen(run.keys.batch("failover_01")) > 0
            assert replica.llen(run.keys.backlog("backlog:default")) > 0
        until(lambda: len(run.receipts("failover_01")) >= 20, "20 jobs done", 60)

        killed, promoted = sentinels.kill_master()

        until_all_succeeded(run, "failover_01", JOBS, "after the failover", 120)
        receipts = run.receipts("failover_01")
        assert {r["status"] for r in receipts} == {"succeeded"}
        assert all(process.poll() is None for process in run.processes), "a service exited"
        later = sorted(r["started_at"] for r in receipts if r["started_at"] > killed)
        assert later, "no job started after the master was killed"
        print(  # the README's failover figure comes from here (pytest -s)
            f"\nkill -> promotion {promoted - killed:.2f} s; "
            f"promotion -> first job started {later[0] - promoted:.2f} s"
        )
        for command in (["status"], ["verify", "--batch", "failover_01"]):
            done = run.command(*command)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    finally:
        run.stop()


def test_a_sentinel_url_is_taken_apart_or_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://u:secret@h1:26379,h2:26380/main/2")
    assert load_settings().redis_url.startswith("redis+sentinel://")
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://u:secret@h1:26379")
    with pytest.raises(Exception, match="Sentinel service") as refused:
        load_settings()
    assert "secret" not in str(refused.value)


def test_status_through_sentinels_that_do_not_answer_is_one_line(
    namespace: str, tmp_path: Path
) -> None:
    run = Stack("redis://127.0.0.1:1/0", namespace, tmp_path, {})
    run.env["REDIS_URL"] = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster"
    try:
        done = run.command("status")
    finally:
        run.redis.close()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no sentinel answered with a master for its service" in done.stderr
    assert "Sentinel<" not in done.stderr  # redis-py's repr of its clients, once


async def test_connections_leave_a_demoted_master_within_a_second_of_the_switch(
    sentinels: SentinelSet,
) -> None:
    """A manual failover (the old master alive, demoted): redis-py 5 alone keeps its open
    connections on the old master until Sentinel kills their clients ~10 s later, and
    what they write there is lost. Our pool follows the switch by itself."""
    assert sentinels.replica is not None
    old, new = sentinels.master.port, sentinels.replica.port
    async with connect(sentinels.url, name="test-follow") as client:
        await client.set("probe", "before")
        with redis.Redis(port=sentinels.sentinels[0][0]) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        until(lambda: sentinels.master_port() == new, "the switch", 30)
        switched = time.monotonic()
        written_new = None
        while time.monotonic() - switched < 8 and written_new is None:
            stamp = f"at {time.monotonic():.3f}"
            try:
                await client.set("probe", stamp)
            except (redis.RedisError, OSError):  # the connection dropped by the follower
                await anyio.sleep(0.05)
                continue
            with redis.Redis(port=new) as promoted:
                if promoted.get("probe") == stamp.encode():
                    written_new = time.monotonic() - switched
            await anyio.sleep(0.05)
    assert written_new is not None, f"writes still went to the old master ({old}) after 8 s"
    assert written_new < 3.0, written_new


def test_receipts_lost_with_the_master_mean_runs_again_never_lost_jobs(
    sentinels: SentinelSet, namespace: str, tmp_path: Path
) -> None:
    """Replication is asynchronous: the replica is cut off while jobs finish on the
    master, then the master dies and the stale replica is promoted, its receipts (and
    claims) of those jobs never written. Those jobs run again; the batch still ends all
    succeeded."""
    assert sentinels.replica is not None
    replica = redis.Redis(port=sentinels.replica.port)
    run = sentinels.stack(namespace, tmp_path, {})
    try:
        workers = [run.worker("metal", 4), run.worker("metal", 4)]
        run.conductor()
        sleepers = [{"task": "system.sleep", "args": [0.2]} for _ in range(JOBS)]
        run.dispatch(write_manifest(tmp_path / "stale_01.jsonl", sleepers))
        until(lambda: len(run.receipts("stale_01")) >= 10, "10 jobs done", 60)
        # The replica stops following (a link that broke): it keeps what it had.
        replica.replicaof("127.0.0.1", 1)
        cut_with = len(run.receipts("stale_01"))
        until(lambda: len(run.receipts("stale_01")) >= cut_with + 16, "more jobs done", 60)
        written = len(run.receipts("stale_01"))
        sentinels.master.kill()
        replica.replicaof("127.0.0.1", sentinels.master.port)  # as it was: its master died
        until(lambda: sentinels.master_port() == sentinels.replica.port, "a promotion", 60)
        with redis.Redis(port=sentinels.replica.port) as promoted:
            kept = promoted.hlen(run.keys.receipts("stale_01"))
        assert kept < written  # the receipts written while the replica was frozen: lost

        until_all_succeeded(run, "stale_01", JOBS, "on the stale replica", 120)
        assert all(process.poll() is None for process in run.processes), "a service exited"
        runs = sum(len(run.events(worker, "job_succeeded")) for worker in workers)
        assert runs >= JOBS + (written - kept)  # each lost receipt's job ran again
    finally:
        run.stop()
        replica.close()
