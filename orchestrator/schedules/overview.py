"""What `status --json` and the dashboard's `/api/status` show beside the snapshot: the
schedules (their last tick, batch and outcome) and the batches held by `--after`. Read
apart from the snapshot's script, as neither is part of routing; one reader for both, so
that the two documents stay the same."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from orchestrator.dispatch.after import held_batches
from orchestrator.keys import Keys
from orchestrator.schedules.state import ScheduleStore
from orchestrator.settings import Settings


async def schedules_and_held(redis: Redis, settings: Settings) -> dict[str, Any]:
    keys = Keys(settings.namespace)
    states = await ScheduleStore(redis, keys).states(list(settings.schedules), time.time())
    return {
        "schedules": [state.as_json() for state in states],
        "held": await held_batches(redis, keys),
    }
