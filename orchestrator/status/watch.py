"""`status --watch`: the view of `view`, redrawn live until Ctrl-C."""

from __future__ import annotations

import signal

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.live import Live
from rich.text import Text

from orchestrator.status.snapshot import Snapshot, StatusReader
from orchestrator.status.view import render


async def watch(reader: StatusReader, console: Console, interval: float) -> None:
    """Redraw every `interval` seconds until SIGINT or SIGTERM, then leave the last frame.

    Redis going away is shown on the last good frame and retried; the view never dies
    of it. Rendering and the terminal write run in a thread, off the event loop.
    """
    with (
        Live(Text("reading…"), console=console, auto_refresh=False) as live,
        anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async with anyio.create_task_group() as tasks:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tasks.cancel_scope.cancel()
                    return

            tasks.start_soon(stop_on_signal)
            snapshot: Snapshot | None = None
            note: Text
            every = Text(f"every {interval:g}s · ctrl-c quits", style="dim")
            while True:
                started = anyio.current_time()
                try:
                    snapshot, note = await reader.read(), every
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    note = Text(f"retrying: redis unavailable ({exc})", style="red")
                await anyio.to_thread.run_sync(_show, live, snapshot, note)
                await anyio.sleep(max(0.0, interval - (anyio.current_time() - started)))


def _show(live: Live, snapshot: Snapshot | None, note: Text) -> None:
    width, height = live.console.size
    view = note if snapshot is None else render(snapshot, width=width, height=height, note=note)
    live.update(view, refresh=True)
