"""The dashboard's API, in process against the session's Redis: what it reads, who may
act, and what one refresh costs Redis however many pages are open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import redis.asyncio

from orchestrator.keys import Keys
from orchestrator.stack.redis_server import free_port
from orchestrator.web.app import Dashboard
from tests.conftest import CliResult, CliRunner
from tests.live_stack import write_manifest
from tests.web.conftest import TOKEN, _settings


async def _cli(run_cli: CliRunner, *args: str) -> CliResult:
    """The command as a user runs it (its own event loop, so in a thread of its own)."""
    return await anyio.to_thread.run_sync(lambda: run_cli(*args))


async def _dispatch(
    run_cli: CliRunner, tmp_path: Path, name: str, lines: list[dict[str, Any]]
) -> Path:
    manifest = write_manifest(tmp_path / f"{name}.jsonl", lines)
    result = await _cli(run_cli, "dispatch", str(manifest), "--backlog", "default")
    assert result.code == 0, result.err
    return manifest


async def test_status_is_the_status_command_document(
    client: httpx.AsyncClient, run_cli: CliRunner, tmp_path: Path
) -> None:
    await _dispatch(
        run_cli, tmp_path, "b1", [{"task": "system.echo", "args": [i]} for i in range(3)]
    )
    cli = json.loads((await _cli(run_cli, "status", "--json")).out)
    api = (await client.get("/api/status")).json()
    assert api["schema"] == cli["schema"]
    assert set(api) == set(cli)
    assert [p["name"] for p in api["pools"]] == [p["name"] for p in cli["pools"]]
    assert api["backlogs"][0] == cli["backlogs"][0] == {**api["backlogs"][0], "depth": 3}
    assert [b["id"] for b in api["batches"]] == ["b1"]
    assert api["batches_total"] == 1


async def test_healthz_says_whether_redis_answers(client: httpx.AsyncClient) -> None:
    """What a container's health check asks (`orchestrator healthcheck --port 8765`)."""
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert answer.text == "ok\n"
    port = free_port()  # nothing listens on it
    gone = redis.asyncio.Redis(port=port, socket_connect_timeout=1)
    settings = _settings().model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    app = Dashboard(gone, settings, token=TOKEN).app(loopback_only=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
        answer = await c.get("/healthz")
    await gone.aclose()
    assert answer.status_code == 503
    assert f"127.0.0.1:{port}" in answer.text


async def test_pages_are_the_shell_and_assets_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/", "/batches", "/batches/b1", "/dead", "/dead/b1:1"):
        page = await client.get(path)
        assert page.status_code == 200
        assert '<script src="/static/app.js"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    script = await client.get("/static/app.js")
    assert script.status_code == 200
    assert "innerHTML" not in script.text  # the pages build text nodes only


async def test_actions_need_the_token(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    path = "/api/backlogs/default/pause"
    refused = [
        await client.post(path),
        await client.post(path, headers={"x-orchestrator-token": "wrong"}),
        await client.post(path, headers={"x-orchestrator-token": TOKEN[:-1]}),
        # the right token from another site's page: refused all the same
        await client.post(
            path, headers={"x-orchestrator-token": TOKEN, "origin": "http://evil.example"}
        ),
        await client.post(
            path, headers={"x-orchestrator-token": TOKEN, "sec-fetch-site": "cross-site"}
        ),
        # a token in a query string or a form body is not the header
        await client.post(f"{path}?token={TOKEN}", data={"token": TOKEN}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert not await async_redis.hgetall(keys.paused_backlogs)
    done = await client.post(
        path, headers={"x-orchestrator-token": TOKEN, "origin": "http://127.0.0.1:8765"}
    )
    assert done.status_code == 200, done.text
    assert await async_redis.hexists(keys.paused_backlogs, "backlog:default")
    resumed = await client.post(
        "/api/backlogs/default/resume", headers={"x-orchestrator-token": TOKEN}
    )
    assert resumed.status_code == 200
    assert not await async_redis.hgetall(keys.paused_backlogs)


async def test_reads_never_act(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    """GET on an action is not an action (a link or an <img> cannot pause anything)."""
    assert (await client.get("/api/backlogs/default/pause")).status_code == 405
    assert (await client.get("/api/batches/b1/cancel")).status_code == 404  # no such batch
    assert not await async_redis.hgetall(keys.paused_backlogs)


async def test_only_loopback_names_are_served_on_loopback(client: httpx.AsyncClient) -> None:
    """A site whose DNS name resolves to 127.0.0.1 cannot read the dashboard (rebinding)."""
    assert (
        await client.get("/api/status", headers={"host": "evil.example:8765"})
    ).status_code == 421
    assert (await client.get("/api/status", headers={"host": "localhost:8765"})).status_code == 200


async def test_pool_actions_name_configured_pools(client: httpx.AsyncClient) -> None:
    headers = {"x-orchestrator-token": TOKEN}
    missing = await client.post("/api/pools/nosuch/pause", headers=headers)
    assert missing.status_code == 404
    assert "not a configured pool" in missing.json()["error"]
    paused = await client.post("/api/pools/cloud/pause", headers=headers)
    assert paused.status_code == 200
    status = (await client.get("/api/status")).json()
    assert next(p for p in status["pools"] if p["name"] == "cloud")["paused_at"] is not None


async def test_cancel_a_batch_through_the_api(
    client: httpx.AsyncClient, run_cli: CliRunner, tmp_path: Path
) -> None:
    manifest = await _dispatch(
        run_cli, tmp_path, "doomed", [{"task": "system.echo", "args": [i]} for i in range(5)]
    )
    headers = {"x-orchestrator-token": TOKEN}
    unknown = await client.post("/api/batches/doomd/cancel", headers=headers)
    assert unknown.status_code == 404
    assert "did you mean 'doomed'" in unknown.json()["error"]
    done = await client.post("/api/batches/doomed/cancel", headers=headers)
    assert done.status_code == 200
    assert done.json()["result"]["cancelled"] == 5
    batch = (await client.get("/api/batches/doomed")).json()
    assert batch["counts"]["cancelled"] == 5
    assert batch["cancelled_at"] is not None
    verified = await _cli(run_cli, "verify", str(manifest))
    assert verified.code == 1
    assert "5 cancelled" in verified.out


async def test_batch_list_pages_through_every_batch(
    client: httpx.AsyncClient, run_cli: CliRunner, tmp_path: Path
) -> None:
    for n in range(30):
        await _dispatch(run_cli, tmp_path, f"batch{n:02}", [{"task": "system.echo", "args": [n]}])
    first = (await client.get("/api/batches")).json()
    second = (await client.get("/api/batches?page=2")).json()
    assert first["total"] == second["total"] == 30
    ids = [b["id"] for b in first["batches"] + second["batches"]]
    assert ids == [f"batch{n:02}" for n in reversed(range(30))]  # newest first, each once


async def test_dead_letter_shows_its_payload_and_requeues(
    client: httpx.AsyncClient, async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    envelope = {
        "id": "b9:1", "batch": "b9", "task": "system.echo",
        "args": ["<script>alert(1)</script>"], "dispatched_at": 1.0,
    }  # fmt: skip
    letter = {"job_id": "b9:1", "reason": "failed", "error": "boom", "at": 2.0}
    await async_redis.rpush(keys.dead, orjson.dumps({**letter, "payload": envelope}))
    listed = (await client.get("/api/dead")).json()
    assert listed["total"] == 1
    assert listed["letters"][0]["ref"] == "b9:1"
    shown = (await client.get("/api/dead/b9:1")).json()
    assert shown["payload"]["args"] == ["<script>alert(1)</script>"]
    assert (await client.post("/api/dead/b9:1/requeue")).status_code == 403
    done = await client.post("/api/dead/b9:1/requeue", headers={"x-orchestrator-token": TOKEN})
    assert done.status_code == 200, done.text
    assert await async_redis.llen(keys.dead) == 0
    ready = await async_redis.lrange(keys.ready, 0, -1)
    assert [orjson.loads(raw)["id"] for raw in ready] == ["b9:1"]
    again = await client.post("/api/dead/b9:1/requeue", headers={"x-orchestrator-token": TOKEN})
    assert again.status_code == 404


async def test_open_pages_share_one_snapshot_per_interval(
    dashboard: Dashboard, client: httpx.AsyncClient, async_redis: redis.asyncio.Redis
) -> None:
    """Ten pages reading as fast as they can, for five intervals: Redis runs the snapshot
    script at most once per interval (counted by Redis itself)."""
    await client.get("/api/status")  # loads the script
    before = await _script_calls(async_redis)
    seconds = 5 * dashboard.interval

    async def page() -> None:
        with anyio.move_on_after(seconds):
            while True:
                assert (await client.get("/api/status")).status_code == 200
                await anyio.sleep(0.005)

    async with anyio.create_task_group() as pages:
        for _ in range(10):
            pages.start_soon(page)
    calls = await _script_calls(async_redis) - before
    assert 1 <= calls <= 5 + 1


async def test_live_pages_are_fed_by_the_same_reads(dashboard: Dashboard) -> None:
    """Server-sent-event streams wake together on each refresh and share its read."""
    frames: list[list[int]] = [[] for _ in range(10)]

    async def watch(seen: list[int]) -> None:
        with anyio.move_on_after(4 * dashboard.interval):
            async for frame in dashboard.snapshot.stream():
                seen.append(frame.version)

    async with anyio.create_task_group() as pages:
        for seen in frames:
            pages.start_soon(watch, seen)
    assert dashboard.snapshot.reads <= 4 + 1
    assert all(len(seen) >= 3 for seen in frames)  # every page got each refresh


async def _script_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(
        int(value["calls"]) for name, value in stats.items() if name.startswith("cmdstat_eval")
    )


def test_web_refuses_to_expose_itself_without_a_token(run_cli: CliRunner) -> None:
    result = run_cli("web", "--host", "0.0.0.0")
    assert result.code == 2
    assert "set ORCHESTRATOR_WEB_TOKEN" in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_web_on_a_taken_port_says_so_in_one_line(run_cli: CliRunner, redis_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("web", "--port", str(port))
    assert result.code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_a_settled_batch_is_read_whole_again_only_when_it_changed(
    async_redis: redis.asyncio.Redis, keys: Keys, run_cli: CliRunner, tmp_path: Path
) -> None:
    from orchestrator.status.batch_detail import read_again

    await _dispatch(
        run_cli, tmp_path, "done", [{"task": "system.echo", "args": [i]} for i in range(3)]
    )
    first = await read_again(async_redis, keys, "done", None)
    assert first is not None
    assert not first.settled  # nothing ran yet
    for n in range(1, 4):
        receipt = {
            "job_id": f"done:{n}", "batch": "done", "task": "system.echo",
            "status": "failed" if n == 3 else "succeeded", "pool": "metal", "worker": "w",
            "attempt": 1, "started_at": 1.0, "ended_at": 2.0, "duration": 1.0, "error": None,
        }  # fmt: skip
        await async_redis.hset(keys.receipts("done"), f"done:{n}", orjson.dumps(receipt))
    settled = await read_again(async_redis, keys, "done", first)
    assert settled is not None
    assert settled.settled
    assert settled.counts["succeeded"] == 2
    assert await read_again(async_redis, keys, "done", settled) is settled  # not re-read
    # a retry of its failure takes it out of settled: read whole again
    await async_redis.hset(
        keys.receipts("done"), "done:3", orjson.dumps({**receipt, "status": "retrying"})
    )
    await async_redis.hset(
        keys.running("done"), "done:3", orjson.dumps({**receipt, "status": "running"})
    )
    again = await read_again(async_redis, keys, "done", settled)
    assert again is not settled
    assert again is not None
    assert again.counts["running"] == 1


async def test_a_job_cancelled_before_it_started_has_no_duration(
    client: httpx.AsyncClient, run_cli: CliRunner, tmp_path: Path
) -> None:
    """It never ran: its duration is absent (shown as a dash), not a run of 0.00 s."""
    await _dispatch(
        run_cli, tmp_path, "gone", [{"task": "system.echo", "args": [i]} for i in range(2)]
    )  # no conductor: both wait on the backlog
    cancelled = await _cli(run_cli, "cancel", "gone")
    assert cancelled.code == 0, cancelled.err
    reply = await client.get("/api/batches/gone")
    rows = reply.json()["jobs"]["rows"]
    assert [(row["state"], row["duration"]) for row in rows] == [("cancelled", None)] * 2


async def test_schedules_are_read_without_the_token_and_acted_on_with_it(
    async_redis: redis.asyncio.Redis, keys: Keys
) -> None:
    from orchestrator.settings import load_settings
    from orchestrator.web.app import Dashboard
    from tests.web.conftest import TOKEN

    schedule = {"name": "nightly", "workflow": "system_test", "backlog": "backlog:default",
                "args": ["--mode", "debug"], "cron": "0 2 * * *"}  # fmt: skip
    settings = load_settings(schedules=[schedule], namespace=keys.namespace)
    app = Dashboard(async_redis, settings, token=TOKEN, interval=0.2).app(loopback_only=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
        listed = (await c.get("/api/schedules")).json()
        assert [s["name"] for s in listed["schedules"]] == ["nightly"]
        assert listed["held"] == []
        refused = await c.post("/api/schedules/nightly/pause", json={})
        assert refused.status_code == 403
        assert not await async_redis.hexists(keys.paused_schedules, "nightly")
        headers = {"x-orchestrator-token": TOKEN, "origin": "http://127.0.0.1:8765"}
        paused = await c.post("/api/schedules/nightly/pause", json={}, headers=headers)
        assert paused.status_code == 200, paused.text
        assert await async_redis.hexists(keys.paused_schedules, "nightly")
        unknown = await c.post("/api/schedules/nightlly/pause", json={}, headers=headers)
        assert unknown.status_code == 400
        assert "unknown schedule 'nightlly'" in unknown.text
