"""The dashboard as an ASGI app: a page shell, its script and style, and the JSON API
under `/api/` the pages read and scripts may call.

The pages are one static shell (`static/index.html`) whose script renders every view
from the API; it builds the DOM from text nodes only, so a job's arguments are shown,
never interpreted. Reads go through `hub`, shared by every open page: the overview and
the first page of batches come from one snapshot (`status/snapshot.py`'s one Lua round trip)
per refresh interval, whoever watches. Actions are POSTs that `guard` checks first.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.connection import RedisSource
from orchestrator.control import deadletters, pausing
from orchestrator.control.cancel import Canceller
from orchestrator.control.retry import retry_batch
from orchestrator.errors import UserError
from orchestrator.keys import Keys, backlog_name
from orchestrator.logs import RedisOutage
from orchestrator.schedules.overview import schedules_and_held
from orchestrator.settings import Settings
from orchestrator.status import waiting
from orchestrator.status.batch_detail import JOB_STATES, BatchDetail, read_again
from orchestrator.status.model import document
from orchestrator.status.snapshot import Snapshot, StatusReader
from orchestrator.web.guard import HostGuard, action_refusal, refusal, unavailable
from orchestrator.web.hub import Shared, SharedByKey
from orchestrator.web.schedule_views import ScheduleViews
from orchestrator.web.timing import ServerTiming
from orchestrator.web.views import Views, read_body

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 25  # batches per page of the batch list
JOBS_PAGE = 100  # jobs per page of a batch page
# Seconds between reads of what the pages show: a live page is at most this plus one
# read behind Redis, and Redis sees one snapshot per this, however many pages are open.
REFRESH = 0.5
DEAD_PAGE = 100  # dead letters per page
PENDING_LISTED = 1_000  # waiting jobs a batch page finds and lists, at most
Handler = Callable[[Request], Awaitable[Response]]
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)  # refused, timed out, reset
log = structlog.get_logger("orchestrator.web")


class Dashboard:
    """What the routes share: one Redis client, the shared reads, the token."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        token: str,
        interval: float = REFRESH,
        source: RedisSource | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.token = token
        self.interval = interval
        self.source = source
        self.outage = RedisOutage(log)
        # The overview and the first page of batches: one snapshot for both.
        reader = StatusReader(redis, settings, batches=PAGE_SIZE, source=source)

        async def read() -> Snapshot:
            snapshot = await reader.read()
            self.outage.answered()
            return snapshot

        self.snapshot: Shared[Snapshot] = Shared(read, interval)
        # Later pages of batches: a reader each, so that its receipt counts carry over.
        self.pages: SharedByKey[Snapshot] = SharedByKey(self._page_reader, interval, size=16)
        self.batches: SharedByKey[BatchDetail | None] = SharedByKey(
            self._batch_reader, interval, size=32
        )
        # A batch's jobs with no record yet, found where they wait: a scan, shared.
        self.pending: SharedByKey[list[tuple[str, dict[str, Any]]]] = SharedByKey(
            self._pending_reader, interval, size=8
        )
        self.views = Views(redis, settings, self.snapshot.get, self._acted)
        self.schedules = ScheduleViews(redis, settings, self._acted)

    def _batch_reader(self, batch: str) -> Callable[[], Awaitable[BatchDetail | None]]:
        """A batch's reads: a settled batch is read whole only when it changed."""
        last: BatchDetail | None = None

        async def read() -> BatchDetail | None:
            nonlocal last
            last = await read_again(self.redis, self.keys, batch, last)
            return last

        return read

    def _pending_reader(self, batch: str) -> Callable[[], Awaitable[list[tuple[str, Any]]]]:
        async def read() -> list[tuple[str, Any]]:
            found = await waiting.of_batch(
                self.redis, self.keys, self.settings, batch, PENDING_LISTED
            )
            return [
                (job.job_id, {"task": job.task or "", "where": where})
                for where, job in found
                if job.job_id is not None
            ]

        return read

    def _page_reader(self, page: str) -> Callable[[], Awaitable[Snapshot]]:
        first = (int(page) - 1) * PAGE_SIZE
        return StatusReader(self.redis, self.settings, batches=PAGE_SIZE, first_batch=first).read

    def close(self) -> None:  # the server stops: every live page's stream ends now
        self.snapshot.close()

    # --- pages and reads ---------------------------------------------------------------

    async def shell(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def health(self, request: Request) -> Response:
        """For a container's health check (`orchestrator healthcheck --port`): 200 while
        Redis answers; 503 (see `_unreachable`) while it does not."""
        await self.redis.ping()
        return Response("ok\n", media_type="text/plain")

    async def status(self, request: Request) -> Response:
        """The document `orchestrator status --json` prints, the same keys and values."""
        frame = await self.snapshot.get()
        extra = await schedules_and_held(self.redis, self.settings)
        return _json_bytes(orjson.dumps({**document(frame.value), **extra}))

    async def events(self, request: Request) -> Response:
        """Server-sent events: the status document at every refresh, until the page goes."""

        async def stream() -> AsyncIterator[bytes]:
            # Too late for a 503 once begun: `unavailable` events tell Redis down from us.
            async for frame in self.snapshot.stream(REDIS_DOWN):
                if await request.is_disconnected():
                    return
                if isinstance(frame, Exception):
                    self.outage.failed(frame, path=request.url.path)
                    body = orjson.dumps(unavailable(self.settings.redis_url, frame))
                    yield b"event: unavailable\ndata: " + body + b"\n\n"
                    continue
                body = orjson.dumps(document(frame.value))
                yield b"event: status\ndata: " + body + b"\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def batch_list(self, request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1, minimum=1)
        snapshot = (
            (await self.snapshot.get()).value
            if page == 1
            else (await self.pages.get(str(page))).value
        )
        return _json(
            {
                "page": page,
                "page_size": PAGE_SIZE,
                "total": snapshot.batches_total,
                "batches": [asdict(batch) for batch in snapshot.batches],
            }
        )

    async def batch(self, request: Request) -> Response:
        batch = request.path_params["batch"]
        state = request.query_params.get("state") or None
        if state is not None and state not in (*JOB_STATES, "pending"):
            return refusal(f"state must be one of {', '.join(JOB_STATES)}, pending", 400)
        detail = (await self.batches.get(batch)).value
        if detail is None:
            return refusal(f"unknown batch {batch!r}", 404)
        offset = _int(request.query_params.get("offset"), 0, minimum=0)
        pending: list[tuple[str, dict[str, Any]]] = []
        if state in (None, "pending") and detail.counts["pending"]:
            pending = (await self.pending.get(batch)).value
        return _json(detail.to_json(state=state, offset=offset, limit=JOBS_PAGE, pending=pending))

    async def dead_list(self, request: Request) -> Response:
        offset = _int(request.query_params.get("offset"), 0, minimum=0)
        total, entries = await deadletters.read_page(self.redis, self.keys, offset, DEAD_PAGE)
        return _json(
            {
                "total": total,
                "offset": offset,
                "page_size": DEAD_PAGE,
                "letters": [_letter(entry, full=False) for entry in entries],
            }
        )

    async def dead(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        chosen, _ = deadletters.select(await deadletters.read_all(self.redis, self.keys), [ref])
        if not chosen:
            return refusal(f"no dead letter {ref!r} (requeued or purged?)", 404)
        records = chosen[ref]
        return _json({**_letter(records[-1], full=True), "records": len(records)})

    # --- actions -------------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        body = await read_body(request)
        report = await Canceller(self.redis, self.settings).batches(
            [request.path_params["batch"]], running=bool(body.get("running")), wait=0.0
        )
        return self._acted(report.to_json())

    async def retry(self, request: Request) -> Response:
        body = await read_body(request)
        report = await retry_batch(
            self.redis,
            self.keys,
            request.path_params["batch"],
            failed=True,
            cancelled=bool(body.get("cancelled")),
        )
        return self._acted(report.to_json())

    async def pause(self, request: Request) -> Response:
        kind, name = _paused_thing(request, self.settings)
        if kind == "pool":
            pools = [p for p in self.settings.pools if p.name == name]
            changes = await pausing.pause_pools(self.redis, self.keys, pools, time.time())
        else:
            changes = await pausing.pause_backlogs(
                self.redis, self.keys, [name], time.time(), self.settings.backlogs
            )
        return self._acted([asdict(change) for change in changes])

    async def resume(self, request: Request) -> Response:
        kind, name = _paused_thing(request, self.settings)
        changes = await pausing.resume(self.redis, self.keys, kind, [name])
        return self._acted([asdict(change) for change in changes])

    async def requeue(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        chosen, _ = deadletters.select(await deadletters.read_all(self.redis, self.keys), [ref])
        if not chosen:
            return refusal(f"no dead letter {ref!r} (requeued or purged meanwhile?)", 404)
        (result,) = await deadletters.requeue(self.redis, self.keys, chosen)
        if result.outcome != "requeued":
            why = {"live": "arq still holds the job; try again in a moment", "gone": "gone"}
            return refusal(f"not requeued: {why.get(result.outcome, result.detail)}", 409)
        return self._acted({"ref": ref, "outcome": result.outcome, "task": result.detail})

    def _acted(self, result: Any) -> Response:
        """After an action, the next read of every view is a fresh one."""
        self.snapshot.expire()
        self.pages.expire()
        self.batches.expire()
        self.pending.expire()
        self.views.histories.expire()
        return _json({"ok": True, "result": result})

    # --- the app -------------------------------------------------------------------------

    def app(self, *, loopback_only: bool) -> Starlette:
        def guarded(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                refused = action_refusal(request, self.token)
                if refused is not None:
                    return refused
                return await handler(request)

            return endpoint

        shell = self.shell
        routes = [
            Route("/", shell),
            Route("/batches", shell),
            Route("/batches/{batch:path}", shell),
            Route("/dead", shell),
            Route("/dead/{ref:path}", shell),
            Route("/jobs", shell),
            Route("/jobs/{job:path}", shell),
            Route("/queues", shell),
            Route("/workers", shell),
            Route("/schedules", shell),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/healthz", self.health),
            Route("/api/status", self.status),
            Route("/api/events", self.events),
            # Ids may hold any non-blank character, `/` included (sent as %2F, which
            # routing sees decoded): `path` parameters, actions matched first.
            Route("/api/batches", self.batch_list),
            Route("/api/batches/{batch:path}/cancel", guarded(self.cancel), methods=["POST"]),
            Route("/api/batches/{batch:path}/retry", guarded(self.retry), methods=["POST"]),
            Route("/api/batches/{batch:path}", self.batch),
            Route("/api/history", self.views.history),
            *self.schedules.routes(guarded),
            Route("/api/jobs/{job:path}", self.views.job),
            Route("/api/queues", self.views.queues),
            Route("/api/workers", self.views.workers),
            Route("/api/dead", self.dead_list),
            Route("/api/dead/requeue", guarded(self.views.requeue_many), methods=["POST"]),
            Route("/api/dead/purge", guarded(self.views.purge), methods=["POST"]),
            Route("/api/dead/{ref:path}/requeue", guarded(self.requeue), methods=["POST"]),
            Route("/api/dead/{ref:path}", self.dead),
            Route("/api/{kind}/{name:path}/pause", guarded(self.pause), methods=["POST"]),
            Route("/api/{kind}/{name:path}/resume", guarded(self.resume), methods=["POST"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(HostGuard, loopback_only=loopback_only),
                Middleware(ServerTiming),
            ],
            exception_handlers={
                UserError: _user_error,
                **dict.fromkeys(REDIS_DOWN, self._unreachable),
            },
        )

    async def _unreachable(self, request: Request, exc: Exception) -> Response:
        self.outage.failed(exc, path=request.url.path)
        reply = unavailable(self.settings.redis_url, exc)
        return refusal(reply.pop("error"), 503, **reply)


async def _user_error(request: Request, exc: Exception) -> Response:
    unknown = isinstance(exc, NotFound) or str(exc).startswith("unknown batch")
    return refusal(str(exc), 404 if unknown else 400)


def _letter(entry: deadletters.Entry, *, full: bool) -> dict[str, Any]:
    record = entry.record
    payload = record["payload"]
    task = payload.get("task") if isinstance(payload, dict) else None
    out: dict[str, Any] = {
        "ref": entry.ref,
        "job_id": record["job_id"],
        "batch": entry.batch,
        "task": task if isinstance(task, str) else None,
        "reason": record["reason"],
        "error": record["error"],
        "at": record["at"],
    }
    if full:
        out["payload"] = payload
        out["receipt"] = record.get("receipt")
    return out


def _paused_thing(request: Request, settings: Settings) -> tuple[pausing.Kind, str]:
    """`/api/pools/NAME/…` or `/api/backlogs/NAME/…`: a configured pool, or a backlog
    (a bare name means `backlog:NAME`, as on the command line)."""
    kind, name = request.path_params["kind"], request.path_params["name"]
    if kind == "pools":
        if name not in settings.pool_names:
            raise NotFound(f"{name!r} is not a configured pool ({', '.join(settings.pool_names)})")
        return "pool", name
    if kind != "backlogs":
        raise NotFound(f"no such thing to pause or resume: {kind!r} (pools or backlogs)")
    try:
        return "backlog", backlog_name(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class NotFound(UserError):
    """What the request names does not exist: 404."""


def _int(text: str | None, default: int, *, minimum: int) -> int:
    try:
        return max(minimum, int(text)) if text else default
    except ValueError:
        return default


def _json(value: Any) -> Response:
    return _json_bytes(orjson.dumps(value))


def _json_bytes(body: bytes) -> Response:
    return Response(body, media_type="application/json")
