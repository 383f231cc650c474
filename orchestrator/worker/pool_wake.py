"""The pool's wake channel, as a worker hears it (`WakeableWorker` waits on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
        # The worker's: whether a forward's wake-up can wait (every slot is busy, so a
        # poll would read nothing); it then notes that the first slot given back must
        # read the queue, which wakes the poll itself (`WakeableWorker`).
        self.can_wait: Callable[[], bool] = lambda: False

    def hear(self, message: bytes) -> None:
        """A forward's message, "<jobs> <the highest score of a job not due yet, or 0>"."""
        _, _, due = message.partition(b" ")
        with suppress(ValueError):
            self.due_until = max(self.due_until, float(due or 0))

    def set(self) -> None:
        """A forward's wake-up (the channel's message)."""
        if not self.can_wait():
            self.event.set()

    def wake(self) -> None:
        """The worker's own wake-up: a slot was given back."""
        self.event.set()
