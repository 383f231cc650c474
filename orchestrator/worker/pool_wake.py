"""The pool's wake channel, as a worker hears it (`WakeableWorker` waits on it)."""

from __future__ import annotations

import asyncio
from contextlib import suppress


class PoolWake:
    """The pool's wake channel as a worker hears it: an event set on every forward, and
    the latest instant (ms) a job forwarded ahead of time is due at.

    A rate-limited job may be forwarded a few milliseconds before its instant, scored
    with it (lua/forward.lua): a worker that polls at the wake-up finds it not due yet.
    Until that instant has passed, a worker whose poll found nothing due reads when the
    next job is due and wakes then; otherwise it reads nothing more than arq does."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.due_until = 0.0

    def hear(self, message: bytes) -> None:
        """A forward's message, "<jobs> <the highest score of a job not due yet, or 0>"."""
        _, _, due = message.partition(b" ")
        with suppress(ValueError):
            self.due_until = max(self.due_until, float(due or 0))

    def set(self) -> None:
        self.event.set()
