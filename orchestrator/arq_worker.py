"""The one place that hooks arq's private worker API: `WakeableWorker`.

arq polls a queue on a fixed period; the conductor only forwards as many jobs as a
pool has free slots, so a worker would sit idle for up to a period after every job.
Here the pause after each poll ends early on the pool's wake channel. And a job
claimed by a process that then dies stays claimed for arq's job timeout unless someone
knows who held it: the worker records that first thing, before arq's own reads.

arq has no public hook for either, so this module overrides arq internals — and is the
only module that does (`tests/unit/test_arq_contract.py` checks each one against the
installed arq):

- `Worker._poll_iteration(self)`: one poll of the queue (read due ids, start them,
  reap finished tasks). Wrapped to clear the wake event before and, when the poll read
  fewer ids than `queue_read_limit` (the queue is drained), to wait for a wake-up or
  `POLL_DELAY` after; the worker is built with `poll_delay≈0` so arq's own sleep
  is not the pause.
- `Worker.start_jobs(self, job_ids: list[bytes])`: called by `_poll_iteration` with
  the ids it read. Wrapped to count them (how `_poll_iteration` knows the queue ran dry).
- `Worker.run_job(self, job_id: str, score: int)`: one job's run, after `start_jobs`
  set its in-progress claim. Wrapped to record `job_id → pool` in the worker's holding
  hash first, so that the conductor's reaper (`lua/release_dead_workers.lua`) can drop
  the claim of a worker that died; and `lua/take_back.lua` relies on `start_jobs`
  claiming with WATCH/MULTI on `arq:in-progress:<id>`.
- The attributes these read: `Worker.pool` (the `ArqRedis`), `Worker.queue_read_limit`.

Everything else the worker uses (`Worker(...)` keyword arguments, `async_run`, `close`,
`handle_sig`, `handle_sig_wait_for_completion`, `tasks`, `Retry`, `func`) is arq's
public surface; the job format and key names are `arq_jobs`'.

pyproject pins `arq>=0.26,<0.29` for these hooks: private methods may change in any
release, so a new arq is let in only after `test_arq_contract.py` passes against it
(and the worker's integration tests with it), then the pin is raised.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError

# Longest pause between two polls of the pool's queue when no wake-up comes (arq's
# default period is 0.5 s); a forward wakes the worker at once.
POLL_DELAY = 0.5
# arq's own pause between polls, made negligible: the real pause is WakeableWorker's.
ARQ_POLL_DELAY = 0.001


class WakeableWorker(Worker):
    """An arq worker that polls its queue as soon as the conductor forwards a job, and
    says which jobs it holds (in the hash `holding`) as soon as it has claimed them."""

    def __init__(
        self, wake: asyncio.Event, holding: str, pool: str, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._wake = wake
        self._holding = holding
        self._pool_name = pool
        self._read = 0

    async def run_job(self, job_id: str, score: int) -> None:
        with suppress(RedisError, OSError):  # Redis away: arq's own read fails next
            await self.pool.hset(self._holding, job_id, self._pool_name)  # type: ignore[misc]
        await super().run_job(job_id, score)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        self._read = len(job_ids)
        await super().start_jobs(job_ids)

    async def _poll_iteration(self) -> None:
        self._wake.clear()
        self._read = 0
        await super()._poll_iteration()
        if self._read < self.queue_read_limit:  # the queue is drained: pause until woken
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_DELAY)
