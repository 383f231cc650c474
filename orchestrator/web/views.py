"""The dashboard's second hour: history, a job, what waits, the workers at work, and
the bulk actions on dead letters — the same readers the CLI uses, served as JSON.

Kept apart from `app.py` (the shell, the overview, batches and single dead letters) so
that each stays one screen of routes; `Dashboard.app` mounts both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from orchestrator import arq_jobs, history
from orchestrator.control import deadletters
from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.settings import Settings
from orchestrator.status import waiting
from orchestrator.status.job_detail import read_job
from orchestrator.status.snapshot import Snapshot
from orchestrator.web.guard import refusal
from orchestrator.web.hub import SharedByKey

QUEUE_HEAD = 10  # jobs shown per place on the queues page
HISTORY_EVERY = 5.0  # seconds a history read is shared by every open page


class Views:
    """Handlers over one Redis client; `acted` answers an action (and expires what the
    other views cached)."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        snapshot: Callable[[], Any],
        acted: Callable[[Any], Response],
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._snapshot = snapshot
        self._acted = acted
        self.histories: SharedByKey[dict[str, Any]] = SharedByKey(
            self._history_reader, HISTORY_EVERY, size=8
        )

    def _history_reader(self, minutes: str) -> Callable[[], Any]:
        async def read() -> dict[str, Any]:
            return await history.read(self.redis, self.keys, int(minutes), time.time())

        return read

    async def history(self, request: Request) -> Response:
        """`?minutes=N`: the last N minutes (an hour when not said, a day at most)."""
        raw = request.query_params.get("minutes")
        try:
            minutes = history.span(int(raw) if raw else None)
        except ValueError:
            return refusal(f"minutes must be a whole number (1 to {history.MAX_MINUTES})", 400)
        return _json((await self.histories.get(str(minutes))).value)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job"]
        found = await read_job(
            self.redis, self.keys, job_id, request.query_params.get("batch") or None
        )
        if found is None:
            return refusal(f"no job {job_id!r} in Redis (a job id, e.g. mybatch_01:3)", 404)
        return _json(found)

    async def queues(self, request: Request) -> Response:
        """The first jobs waiting in each backlog, the conductors' lists and each pool's
        queue, in the order a job passes them."""
        count = max(1, min(100, _int(request.query_params.get("first"), QUEUE_HEAD)))
        out = []
        for place in await waiting.places(self.redis, self.keys, self.settings):
            total, jobs = await waiting.first(self.redis, place, count)
            out.append({
                "kind": place.kind, "name": place.name, "label": place.label,
                "total": total, "jobs": [job.to_json() for job in jobs],
            })  # fmt: skip
        return _json({"first": count, "places": out})

    async def workers(self, request: Request) -> Response:
        """Each pool's live workers, with the jobs each runs now (its holding hash)."""
        snapshot: Snapshot = (await self._snapshot()).value
        pools = [(pool.name, list(pool.workers)) for pool in snapshot.pools]
        everyone = [worker.id for _, workers in pools for worker in workers]
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in everyone:
                pipe.hkeys(self.keys.holding(worker_id))
            held = dict(zip(everyone, await pipe.execute(), strict=True))
        arq_ids = [arq_id for ids in held.values() for arq_id in ids]
        payloads = await self.redis.mget(
            [arq_jobs.JOB_KEY_PREFIX.encode() + arq_id for arq_id in arq_ids]
        ) if arq_ids else []  # fmt: skip
        envelopes = dict(zip(arq_ids, map(arq_jobs.envelope_in, payloads), strict=True))
        root = (self.keys.arq_job_id("") or ":").encode()
        return _json({
            "pools": [
                {"name": name, "workers": [
                    {**_worker(worker), "jobs": [
                        _held(arq_id, envelopes.get(arq_id), root) for arq_id in held[worker.id]
                    ]} for worker in workers
                ]} for name, workers in pools
            ]
        })  # fmt: skip

    # --- bulk actions on dead letters ---------------------------------------------------

    async def requeue_many(self, request: Request) -> Response:
        """`{"reason": R}` or `{"batch": B}` (or both): every such dead letter, requeued."""
        chosen = await self._matching(await read_body(request), allow_all=False)
        results = await deadletters.requeue(self.redis, self.keys, deadletters.group(chosen))
        outcomes: dict[str, int] = {}
        for result in results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        return self._acted({
            "matched": len(results), "requeued": outcomes.get("requeued", 0),
            "outcomes": outcomes,
            "refused": [{"ref": r.ref, "why": r.detail} for r in results
                        if r.outcome == "refused"][:20],
        })  # fmt: skip

    async def purge(self, request: Request) -> Response:
        """`{"reason": R}`, `{"batch": B}` or `{"all": true}`: those records deleted."""
        chosen = await self._matching(await read_body(request), allow_all=True)
        removed = await deadletters.remove(self.redis, self.keys, chosen)
        return self._acted({"matched": len(chosen), "purged": removed})

    async def _matching(self, body: dict[str, Any], *, allow_all: bool) -> list[Any]:
        reason, batch = body.get("reason"), body.get("batch")
        if reason is None and batch is None and not (allow_all and body.get("all") is True):
            wanted = '"reason", "batch" or "all": true' if allow_all else '"reason" or "batch"'
            raise UserError(f"say which dead letters: {wanted}")
        for name, value in (("reason", reason), ("batch", batch)):
            if value is not None and not isinstance(value, str):
                raise UserError(f"{name} must be a string")
        return [
            entry
            for entry in await deadletters.read_all(self.redis, self.keys)
            if (reason is None or entry.record["reason"] == reason)
            and (batch is None or entry.batch == batch)
        ]


def _worker(worker: Any) -> dict[str, Any]:
    return {
        "id": worker.id, "host": worker.host, "pid": worker.pid, "slots": worker.slots,
        "running": worker.running, "version": worker.version,
        "heartbeat_age": worker.heartbeat_age, "beat_at": time.time() - worker.heartbeat_age,
        "draining": worker.draining, "idle_since": worker.idle_since,
    }  # fmt: skip


def _held(arq_id: bytes, envelope: dict[str, Any] | None, root: bytes) -> dict[str, Any]:
    job_id = arq_id[len(root) :] if arq_id.startswith(root) else arq_id
    envelope = envelope or {}
    return {
        "id": job_id.decode(errors="replace"),
        "batch": envelope.get("batch"),
        "task": envelope.get("task"),
    }


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UserError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    return body


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")
