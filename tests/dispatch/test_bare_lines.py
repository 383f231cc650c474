"""Producers in any language: a bare manifest line pushed onto a backlog list with
`redis-cli` (not redis-py, not `orchestrator dispatch`) is a job."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import time

import orjson
import pytest

from tests.conftest import StackFactory
from tests.live_stack import Stack, write_manifest

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli")


def redis_cli(run: Stack, *args: str) -> str:
    """What a shell script of the producer would run."""
    done = subprocess.run(
        ["redis-cli", "-u", run.url, *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def push(run: Stack, backlog: str, *lines: str) -> None:
    redis_cli(run, "RPUSH", run.keys.backlog(backlog), *lines)


def verify_batch(run: Stack, batch: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "verify", "--batch", batch],
        env=run.env, cwd=run.directory, capture_output=True, text=True, check=False,
    )  # fmt: skip


def adhoc_batch(name: str) -> str:
    return f"adhoc:{name}:{datetime.datetime.now(datetime.UTC):%Y-%m-%d}"


def test_bare_lines_on_a_configured_and_an_unknown_backlog_run_and_verify(
    stack: StackFactory,
) -> None:
    """Lines on a configured backlog and on one the producer announced with SADD both
    run; `verify --batch` reports each ad-hoc batch from its receipts and exits 0."""
    run = stack(backlogs=["backlog:stress"])
    run.worker("metal", 4)
    run.conductor()
    push(run, "backlog:stress", *(orjson.dumps({"task": "system.echo", "args": [n]}).decode()
                                  for n in range(3)))  # fmt: skip
    redis_cli(run, "SADD", run.keys.backlogs, "backlog:feed")
    push(run, "backlog:feed", '{"task": "system.echo", "args": ["hi"], "meta": {}}')
    stress, feed = adhoc_batch("stress"), adhoc_batch("feed")
    receipts = run.wait_for_receipts(stress, 3, timeout=30)
    assert {r["status"] for r in receipts} == {"succeeded"}
    assert all(r["job_id"].startswith("backlog:stress:") for r in receipts)
    (fed,) = run.wait_for_receipts(feed, 1, timeout=30)
    assert fed["status"] == "succeeded"
    for batch, verdict in ((stress, "all 3 jobs succeeded"), (feed, "the 1 job succeeded")):
        verified = verify_batch(run, batch)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verdict in verified.stdout, verified.stdout
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "--json"],
        env=run.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    batches = {b["id"]: b for b in orjson.loads(status.stdout)["batches"]}
    assert batches[stress]["done"] == 3


def test_a_bad_bare_line_is_dead_lettered_with_the_reason_dispatch_gives(
    stack: StackFactory,
) -> None:
    """Each refusal reads as dispatch's `field: reason`; the conductor goes on."""
    run = stack()
    run.worker("metal", 1)
    conductor = run.conductor()
    push(
        run, "backlog:default",
        '{"task": "system.echo", "args": "x"}',
        '{"task": "system.echo", "args": [1], "meta": {"pool": "metl"}}',
        '{"task": "nosuch.task", "args": []}',
        '{"task": "system.echo", "args": [1], "colour": "red"}',
    )  # fmt: skip
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 4, "four dead letters")
    dead = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    errors = sorted(d["error"] for d in dead)
    assert errors[0] == "args: Input should be a valid array"
    assert errors[1] == "colour: unknown field (a line has task, args, kwargs, meta, id)"
    assert errors[2].startswith("meta.pool: 'metl' is not a configured pool")
    assert "did you mean 'metal'?" in errors[2]
    assert errors[3] == "task: unknown task 'nosuch.task' (no live worker runs it)"
    assert {d["reason"] for d in dead} == {"invalid_payload", "unknown_task"}
    assert conductor.poll() is None


def test_the_same_line_with_the_same_id_pushed_twice_runs_once(stack: StackFactory) -> None:
    """A producer that retries its push does not run the job twice, even after it ran."""
    run = stack()
    run.worker("metal", 2)
    run.conductor()
    line = '{"task": "system.echo", "args": [7], "id": "order-7", "meta": {"batch": "orders"}}'
    push(run, "backlog:default", line, line)
    (receipt,) = run.wait_for_receipts("orders", 1)
    push(run, "backlog:default", line)  # and once more, after it has run
    run.wait_for(lambda: run.redis.llen(run.keys.backlog("backlog:default")) == 0, "taken")
    run.wait_for(lambda: not run.redis.llen(run.keys.ready), "routed")
    time.sleep(0.5)  # a second run, were there one, would have written its receipt by now
    assert run.receipts("orders") == [receipt]
    assert receipt["attempt"] == 1
    assert run.redis.scard(run.keys.batch_ids("orders")) == 1
    assert verify_batch(run, "orders").returncode == 0


def test_verify_of_an_unknown_batch_is_one_line(stack: StackFactory) -> None:
    """No manifest and no such batch: exit 2, one line."""
    run = stack()
    verified = verify_batch(run, "adhoc:nothing:2020-01-01")
    assert verified.returncode == 2
    assert verified.stderr.count("\n") == 1
    assert "no batch named 'adhoc:nothing:2020-01-01'" in verified.stderr


def test_verify_wait_right_after_a_push_waits_for_the_batch_to_appear(
    stack: StackFactory,
) -> None:
    """A producer's lines become a batch when a conductor takes the first: `verify --batch
    NAME --wait` started right after the push waits for it (said once), then settles."""
    run = stack()
    line = '{"task": "system.echo", "args": [1], "meta": {"batch": "late"}}'
    push(run, "backlog:default", line)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "verify", "--batch", "late", "--wait",
         "--timeout", "60"],
        env=run.env, cwd=run.directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(1.5)  # no conductor yet: no batch
    assert waiting.poll() is None
    run.worker("metal", 2)
    run.conductor()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    assert err.count("waiting for batch 'late' to appear") == 1


def test_verify_wait_gives_up_on_a_batch_that_never_appears_within_its_timeout(
    stack: StackFactory,
) -> None:
    run = stack()
    verified = subprocess.run(
        [sys.executable, "-m", "orchestrator", "verify", "--batch", "never", "--wait",
         "--timeout", "1"],
        env=run.env, cwd=run.directory, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 3  # not settled, as any --timeout that ran out
    assert "gave up waiting after 1 s: no batch named 'never' appeared" in verified.stderr
    assert "Traceback" not in verified.stderr


def test_dispatch_warns_when_no_live_worker_runs_a_task_it_queued(stack: StackFactory) -> None:
    """A task added to the code while the workers run (they load tasks when they start):
    the dispatch that knows it says no live worker runs it, and what to do."""
    run = stack()
    run.worker("metal", 2)
    newer = {**run.env}
    newer["ORCHESTRATOR_TASK_PACKAGES"] = (
        '["workers.tasks", "tests.fixtures.tasks", "tests.fixtures.sync_tasks"]'
    )
    manifest = write_manifest(
        run.directory / "newer_01.jsonl",
        [{"task": "sync.nap", "args": [0.01]}, {"task": "system.echo", "args": [1]}],
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dispatch", str(manifest), "--backlog", "default"],
        env=newer, cwd=run.directory, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "orchestrator: warning: no live worker runs sync.nap: its jobs wait until one does "
        "(workers load their tasks when they start: restart them, or `up`)\n"
    )
    known = write_manifest(run.directory / "known_01.jsonl", [{"task": "system.echo", "args": [1]}])
    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dispatch", str(known), "--backlog", "default"],
        env=newer, cwd=run.directory, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (again.returncode, again.stderr) == (0, "")
