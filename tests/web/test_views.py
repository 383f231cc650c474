"""The dashboard's history, job, queues and bulk-action API, in process against the
session's Redis."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import redis.asyncio

from orchestrator.keys import Keys
from orchestrator.receipts import Receipt, stage
from tests.conftest import CliRunner
from tests.web.conftest import TOKEN
from tests.web.test_app import _dispatch

AUTH = {"x-orchestrator-token": TOKEN}


def _receipt(job_id: str, batch: str, status: str, pool: str = "metal") -> Receipt:
    now = time.time()
    return Receipt(
        job_id=job_id, batch=batch, task="system.echo", status=status,  # type: ignore[typeddict-item]
        pool=pool, worker="w-1", attempt=1, started_at=now - 0.5, ended_at=now, duration=0.5,
        error=None if status == "succeeded" else "boom", result=[1],
    )  # fmt: skip


async def _finish(client: redis.asyncio.Redis, keys: Keys, *receipts: Receipt) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for receipt in receipts:
            stage(pipe, keys, receipt, finished=True)
        await pipe.execute()


async def test_history_is_read_without_the_token_a_day_at_most(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """`GET /api/history?minutes=N`: per-minute points, an hour by default, a day at most."""
    await _finish(
        async_redis, keys,
        _receipt("h:1", "h", "succeeded"), _receipt("h:2", "h", "succeeded", "cloud"),
        _receipt("h:3", "h", "failed"),
    )  # fmt: skip
    reply = await client.get("/api/history")
    assert reply.status_code == 200
    body = reply.json()
    assert body["minutes"] == 60
    assert len(body["points"]) == 60
    assert body["totals"]["succeeded"] == {"cloud": 1, "metal": 1}
    assert body["totals"]["failed"] == {"cloud": 0, "metal": 1}
    assert body["points"][-1]["succeeded"] == {"cloud": 1, "metal": 1}
    day = (await client.get("/api/history?minutes=100000")).json()
    assert day["minutes"] == 1440
    assert len(day["points"]) == 1440
    assert (await client.get("/api/history?minutes=soon")).status_code == 400


async def test_a_job_is_found_by_its_id_pending_then_finished(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys,
    run_cli: CliRunner, tmp_path: Path,
) -> None:  # fmt: skip
    """A job not started is pending in its batch; once it ran, its receipt, result and run."""
    await _dispatch(
        run_cli, tmp_path, "jb", [{"task": "system.echo", "args": [i]} for i in range(2)]
    )
    pending = (await client.get("/api/jobs/jb:1")).json()
    assert (pending["batch"], pending["state"], pending["runs"]) == ("jb", "pending", [])
    await _finish(async_redis, keys, _receipt("jb:1", "jb", "succeeded"))
    done = (await client.get("/api/jobs/jb:1")).json()
    assert done["state"] == "succeeded"
    assert done["result"] == [1]
    assert [(r["attempt"], r["pool"], r["worker"]) for r in done["runs"]] == [(1, "metal", "w-1")]
    assert (await client.get("/api/jobs/nothing-of-the-kind")).status_code == 404


async def test_a_dead_job_shows_its_arguments_error_and_dead_letter(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """Found by its id alone (its batch named in the dead letter): args from the envelope."""
    receipt = _receipt("custom-id", "b7", "failed")
    envelope = {"id": "custom-id", "batch": "b7", "task": "system.echo", "args": ["x"],
                "dispatched_at": 1.0}  # fmt: skip
    letter = {"job_id": "custom-id", "reason": "failed", "error": "boom", "at": 2.0,
              "payload": envelope, "receipt": receipt}  # fmt: skip
    await _finish(async_redis, keys, receipt)
    await async_redis.rpush(keys.dead, orjson.dumps(letter))
    job = (await client.get("/api/jobs/custom-id")).json()
    assert (job["batch"], job["state"], job["args"], job["error"]) == (
        "b7", "dead_lettered", ["x"], "boom",
    )  # fmt: skip
    assert job["dead_letters"] == [{"reason": "failed", "error": "boom", "at": 2.0}]


async def test_queues_show_the_first_jobs_of_each_backlog(
    client: httpx.AsyncClient, run_cli: CliRunner, tmp_path: Path
) -> None:
    """The head of each place jobs wait, with how many wait there."""
    await _dispatch(
        run_cli, tmp_path, "qb", [{"task": "system.echo", "args": [i]} for i in range(30)]
    )
    places = (await client.get("/api/queues?first=5")).json()["places"]
    backlog = next(p for p in places if p["label"] == "backlog:default")
    assert backlog["total"] == 30
    assert [job["id"] for job in backlog["jobs"]] == [f"qb:{i}" for i in range(1, 6)]
    assert {p["label"] for p in places} >= {"queue:metal", "queue:cloud", "ready:conductors"}


async def test_a_batch_page_lists_its_pending_jobs(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys,
    run_cli: CliRunner, tmp_path: Path,
) -> None:  # fmt: skip
    """Jobs not started are rows too (state pending, where they wait), filterable."""
    await _dispatch(
        run_cli, tmp_path, "pb", [{"task": "system.echo", "args": [i]} for i in range(3)]
    )
    await _finish(async_redis, keys, _receipt("pb:1", "pb", "succeeded"))
    rows = (await client.get("/api/batches/pb")).json()["jobs"]["rows"]
    # (pb:1's receipt is made up here: its envelope still waits in the backlog)
    assert [(r["id"], r["state"]) for r in rows] == [
        ("pb:1", "succeeded"),
        ("pb:1", "pending"),
        ("pb:2", "pending"),
        ("pb:3", "pending"),
    ]
    pending = (await client.get("/api/batches/pb?state=pending")).json()["jobs"]
    assert pending["total"] == 3  # pb:1 is still in the backlog: nothing took it
    assert {r["where"] for r in pending["rows"]} == {"backlog:default"}


async def test_bulk_requeue_by_reason_and_purge_by_batch_need_the_token(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """Every dead letter of a reason requeued; every one of a batch purged; nothing
    without the token or without saying which."""
    for n, (batch, reason) in enumerate([("d1", "failed"), ("d1", "lost"), ("d2", "failed")]):
        envelope = {"id": f"{batch}:{n}", "batch": batch, "task": "system.echo", "args": [n],
                    "dispatched_at": 1.0}  # fmt: skip
        letter = {"job_id": envelope["id"], "reason": reason, "error": "e", "at": 2.0,
                  "payload": envelope}  # fmt: skip
        await async_redis.rpush(keys.dead, orjson.dumps(letter))
    assert (await client.post("/api/dead/requeue", json={"reason": "failed"})).status_code == 403
    assert (await client.post("/api/dead/purge", json={}, headers=AUTH)).status_code == 400
    done = await client.post("/api/dead/requeue", json={"reason": "failed"}, headers=AUTH)
    assert done.status_code == 200, done.text
    assert done.json()["result"]["requeued"] == 2
    ready = [orjson.loads(raw)["id"] for raw in await async_redis.lrange(keys.ready, 0, -1)]
    assert sorted(ready) == ["d1:0", "d2:2"]
    purged = await client.post("/api/dead/purge", json={"batch": "d1"}, headers=AUTH)
    assert purged.json()["result"] == {"matched": 1, "purged": 1}
    assert await async_redis.llen(keys.dead) == 0


async def test_the_new_pages_are_the_shell_and_draw_from_text(client: httpx.AsyncClient) -> None:
    """Jobs, queues and workers are pages of the shell; the charts' script builds no HTML."""
    for path in ("/jobs", "/jobs/b1:1", "/queues", "/workers"):
        page = await client.get(path)
        assert page.status_code == 200
        assert '<script src="/static/charts.js"' in page.text
    charts = await client.get("/static/charts.js")
    assert charts.status_code == 200
    assert "innerHTML" not in charts.text


async def test_a_retried_job_shows_each_of_its_runs(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """The receipt of a run a retry followed is replaced by the next one's; the job page
    still lists it, with its pool, worker and error, latest run first."""
    first = _receipt("rt:1", "rt", "retrying", pool="cloud")
    async with async_redis.pipeline(transaction=True) as pipe:
        stage(pipe, keys, first, finished=False)
        await pipe.execute()
    second = {**_receipt("rt:1", "rt", "succeeded"), "attempt": 2, "worker": "w-2"}
    await _finish(async_redis, keys, second)
    job = (await client.get("/api/jobs/rt:1?batch=rt")).json()
    assert job["state"] == "succeeded"
    assert [
        (r["attempt"], r["status"], r["pool"], r["worker"], r["error"]) for r in job["runs"]
    ] == [
        (2, "succeeded", "metal", "w-2", None),
        (1, "retrying", "cloud", "w-1", "boom"),
    ]
    assert 0 < await async_redis.ttl(keys.attempts("rt", "rt:1")) <= 7 * 86_400
