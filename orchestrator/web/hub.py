"""Reads shared by every open page: at most one Redis read per view per refresh interval.

Ten people watching the overview must cost Redis what one does. So a read is cached
for `interval` seconds and concurrent callers wait for the one read in flight instead
of starting their own; a live page waits for the next refresh rather than polling on
its own clock, so all of them wake together and share it. Nothing is read while
nobody looks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Frame(Generic[T]):
    """One read and when it was made (monotonic seconds); `version` counts reads."""

    value: T
    at: float
    version: int


class Shared(Generic[T]):
    """One value read by `load`, re-read when a caller finds it older than `interval`."""

    def __init__(self, load: Callable[[], Awaitable[T]], interval: float) -> None:
        self._load = load
        self.interval = interval
        self._frame: Frame[T] | None = None
        self._lock = anyio.Lock()
        self.reads = 0  # how many times `load` ran (the benchmark reads it)
        self._closed = False
        self._waits: set[anyio.CancelScope] = set()  # of the streams, `close` cancels them

    def expire(self) -> None:
        """Make the next caller read afresh (after an action changed what it shows)."""
        if self._frame is not None:
            self._frame = Frame(self._frame.value, float("-inf"), self._frame.version)

    async def get(self) -> Frame[T]:
        """The latest read, made now when the last one is older than the interval."""
        frame = self._frame
        if frame is not None and time.monotonic() - frame.at < self.interval:
            return frame
        async with self._lock:
            frame = self._frame  # another caller may have read while we waited
            if frame is not None and time.monotonic() - frame.at < self.interval:
                return frame
            value = await self._load()
            self.reads += 1
            version = frame.version + 1 if frame else 1
            self._frame = Frame(value, time.monotonic(), version)
            return self._frame

    async def stream(
        self, failures: tuple[type[Exception], ...] = ()
    ) -> AsyncIterator[Frame[T] | Exception]:
        """Every refresh, for a live page: sleeps until the current read is due again,
        so that all open pages ask at the same instant and share one read. A read that
        fails with one of `failures` is yielded instead of a frame and tried again an
        interval later: the page stays open and is told why (anything else ends it).
        Ends at once on `close`."""
        while not self._closed:
            found: Frame[T] | Exception | None = None
            with self._until_closed():
                try:
                    found = await self.get()
                except failures as exc:
                    found = exc
            if found is None:
                return
            yield found
            if isinstance(found, Frame):
                pause = found.at + self.interval - time.monotonic()
            else:
                pause = self.interval  # a failed read: try again an interval later
            with self._until_closed():
                await anyio.sleep(max(0.0, pause))

    def close(self) -> None:
        """End every stream now (the server stops): one waiting on a read, even of a
        Redis that does not answer, or on its next refresh returns at once."""
        self._closed = True
        for scope in self._waits:
            scope.cancel()

    @contextmanager
    def _until_closed(self) -> Iterator[None]:
        """No yield inside: a cancel scope must not span an async generator's yield."""
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                yield
            finally:
                self._waits.discard(scope)


class SharedByKey(Generic[T]):
    """`Shared` per key (a batch, a page of the batch list), the least recently used
    dropped beyond `size`, so that a crawler paging through everything holds no memory.
    `loader` makes the read of one key (which may keep state across its reads)."""

    def __init__(
        self, loader: Callable[[str], Callable[[], Awaitable[T]]], interval: float, size: int = 64
    ) -> None:
        self._loader = loader
        self.interval = interval
        self.size = size
        self._views: dict[str, Shared[T]] = {}

    async def get(self, key: str) -> Frame[T]:
        view = self._views.pop(key, None)
        if view is None:
            view = Shared(self._loader(key), self.interval)
        self._views[key] = view  # most recent last
        while len(self._views) > self.size:
            del self._views[next(iter(self._views))]
        return await view.get()

    def expire(self) -> None:
        for view in self._views.values():
            view.expire()

    @property
    def reads(self) -> int:
        return sum(view.reads for view in self._views.values())
