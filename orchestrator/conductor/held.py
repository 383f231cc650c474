"""Held batches (`dispatch --after`): every conductor looks at them a few times a
second and releases each once the batches it waits for have settled.

The look and the release are one script (`lua/release_after.lua`), so however many
conductors look, one releases, and a batch's jobs reach the backlog within a look's
interval of the last awaited receipt. While nothing is held a look is one SMEMBERS a
second (a batch held after what it waits for settled goes within that second).
"""

from __future__ import annotations

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from orchestrator.dispatch.after import look
from orchestrator.keys import Keys
from orchestrator.logs import RedisOutage

LOOK_EVERY = 0.2  # seconds between looks while batches are held
IDLE_LOOK_EVERY = 1.0  # … while none is


class HeldBatches:
    def __init__(
        self, redis: Redis, keys: Keys, log: FilteringBoundLogger, outage: RedisOutage
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.log = log
        self.outage = outage
        self._said: dict[str, str] = {}  # batch → the state last logged

    async def run(self) -> None:
        while True:
            held = True
            try:
                held = await self.look_once()
            except (RedisError, OSError) as exc:
                self.outage.failed(exc, during="held batches")
            await anyio.sleep(LOOK_EVERY if held else IDLE_LOOK_EVERY)

    async def look_once(self) -> bool:
        """Look at every held batch; False when there is none."""
        held = [b.decode() for b in await self.redis.smembers(self.keys.held_batches)]  # type: ignore[misc]
        for batch in held:
            found = await look(self.redis, self.keys, batch)
            if found.state in ("released", "cancelled"):
                self.log.info(f"batch_{found.state}", batch=batch, reason=found.detail)
                self._said.pop(batch, None)
            elif found.state == "blocked" and self._said.get(batch) != "blocked":
                self.log.warning("batch_blocked", batch=batch, reason=found.detail)
                self._said[batch] = "blocked"
            elif found.state == "waiting" and batch not in self._said:
                self.log.info("batch_held", batch=batch, reason=found.detail)
                self._said[batch] = "waiting"
        for gone in set(self._said) - set(held):
            del self._said[gone]
        return bool(held)
