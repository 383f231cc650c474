"""The dashboard's schedules page: each schedule (next tick, last tick, last batch and
its outcome) and the batches held by `--after`, as `orchestrator schedules` and
`status` show them, with the actions of `schedules run|pause|resume` and `release`
behind the token."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.dispatch.after import release
from orchestrator.errors import UserError
from orchestrator.keys import Keys
from orchestrator.schedule import ScheduleSettings
from orchestrator.schedules.overview import schedules_and_held
from orchestrator.schedules.state import ScheduleStore
from orchestrator.settings import Settings

Handler = Callable[[Request], Awaitable[Response]]


class ScheduleViews:
    def __init__(self, redis: Redis, settings: Settings, acted: Callable[[Any], Response]) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._acted = acted

    async def listing(self, request: Request) -> Response:
        """`GET /api/schedules`: readable without the token, like /api/status."""
        found = await schedules_and_held(self.redis, self.settings)
        return Response(orjson.dumps(found), media_type="application/json")

    def routes(self, guarded: Callable[[Handler], Handler]) -> list[Route]:
        """The list, readable without the token; each action behind it (`guarded`)."""
        actions = {"run": self.run, "pause": self.pause, "resume": self.resume}
        return [
            Route("/api/schedules", self.listing),
            *(
                Route(f"/api/schedules/{{name}}/{action}", guarded(act), methods=["POST"])
                for action, act in actions.items()
            ),
            Route("/api/held/{batch:path}/release", guarded(self.release), methods=["POST"]),
        ]

    async def run(self, request: Request) -> Response:
        """Fire the schedule now, as `orchestrator schedules run NAME` (a tick of its own:
        planned and dispatched in a bounded child process)."""
        from orchestrator.schedules.firing import fire

        schedule = self._named(request)
        done = await fire(self.settings, self.redis, schedule, float(int(time.time())), manual=True)
        return self._acted({"outcome": done.outcome, "detail": done.detail, "batch": done.batch})

    async def pause(self, request: Request) -> Response:
        schedule = self._named(request)
        changed = await ScheduleStore(self.redis, self.keys).pause(schedule.name, time.time())
        return self._acted({"schedule": schedule.name, "paused": True, "changed": changed})

    async def resume(self, request: Request) -> Response:
        schedule = self._named(request)
        changed = await ScheduleStore(self.redis, self.keys).resume(schedule.name)
        return self._acted({"schedule": schedule.name, "paused": False, "changed": changed})

    async def release(self, request: Request) -> Response:
        """Let a held batch run now, whatever it waits for (`orchestrator release`)."""
        found = await release(self.redis, self.keys, request.path_params["batch"])
        return self._acted({"state": found.state, "detail": found.detail})

    def _named(self, request: Request) -> ScheduleSettings:
        name = request.path_params["name"]
        for schedule in self.settings.schedules:
            if schedule.name == name:
                return schedule
        raise UserError(f"unknown schedule {name!r}")
