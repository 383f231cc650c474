"""A job's end while Redis is full: kept by the worker and written once Redis has room.

A Redis at `maxmemory` under `noeviction` refuses every write with an OOM error, and a
MULTI, or a job's end sent as one script (`one_call`), whole. The worker then keeps the
job (arq's in-progress claim stays) and its receipt, and tries the same end again with
backoff, said once a job: nothing is lost, and everything is written once memory is
freed (`tests/chaos/test_full_redis.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import ResponseError

from orchestrator.eviction import FULL_HINT, is_oom

log = structlog.get_logger("orchestrator.worker")
FIRST, AT_MOST = 0.5, 5.0  # seconds between tries


async def while_full(write: Callable[[], Awaitable[None]], **about: str) -> None:
    """Run `write` until Redis accepts it; any error but OOM goes up as it is."""
    pause, said = FIRST, False
    while True:
        try:
            await write()
            return
        except ResponseError as exc:
            if not is_oom(exc):
                raise
            if not said:
                # not str(exc): a MULTI's error quotes the whole receipt
                log.warning("receipt_deferred", **about, error="Redis is full (OOM)",
                            retry_in=pause, hint=FULL_HINT)  # fmt: skip
                said = True
        await asyncio.sleep(pause)
        pause = min(pause * 2, AT_MOST)
