"""How a status snapshot reads on a terminal: once (`status`) or live (`status --watch`).

Laid out for 80x24 first: pools on top, since the question a reader comes with is
"is metal full and is cloud taking the overflow?" — a line under the pools answers it
in words. Bars are drawn with two glyphs (█ used, ░ free) rather than rich's colour-only
progress bars, so they still read on a terminal without colour or in a pasted capture.
When the screen is short, batches give way first (the newest are kept).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.status import Batch, Pool, Snapshot, StatusReader

BAR = 10
HEAD = "bold"


def render(
    snapshot: Snapshot,
    *,
    width: int = 80,
    height: int | None = None,
    note: str | Text | None = None,
) -> RenderableType:
    """The whole view; with `height`, batches are cut to fit it. `note` goes top right
    (a plain string is shown dim, as is)."""
    parts: list[RenderableType] = [
        _title(snapshot, note),
        Group(_pools(snapshot, width), _verdict(snapshot)),
        _queues(snapshot),
    ]
    if snapshot.rate_limits:
        parts.append(_rate_limits(snapshot))
    if snapshot.batches:
        room = None if height is None else height - _height(_spaced(parts), width) - 3
        parts.append(_batches(snapshot.batches, room))
    return _spaced(parts)


def _spaced(parts: list[RenderableType]) -> Group:
    """Sections one blank line apart; the title sits directly on the pools."""
    title, *sections = parts
    spaced: list[RenderableType] = [title]
    for index, section in enumerate(sections):
        spaced += [section] if index == 0 else [Text(""), section]
    return Group(*spaced)


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


def _title(snapshot: Snapshot, note: str | Text | None) -> Table:
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.time))
    title = Text.assemble(
        ("orchestrator status", "bold"), f" · namespace {snapshot.namespace} · {clock}"
    )
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True, min_width=len(title))  # the note gives way, not the clock
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
    grid.add_row(title, Text(note, style="dim") if isinstance(note, str) else note or "")
    return grid


def _pools(snapshot: Snapshot, width: int) -> Table:
    """One row per pool; below 80 columns the secondary numbers give way to the bar."""
    columns: dict[str, Callable[[Pool], object]] = {
        "workers": lambda p: len(p.workers),
        "slots": lambda p: p.capacity,
        "in flight": lambda p: p.in_flight,
        "running": lambda p: p.running,
        "queued": lambda p: p.queued,
        "free": lambda p: p.free,
        "beat": lambda p: (
            "-" if p.oldest_heartbeat_age is None else f"{p.oldest_heartbeat_age:.1f}s"
        ),
    }
    if width < 80:
        columns = {k: v for k, v in columns.items() if k in ("slots", "in flight", "free")}
    table = _table("pool", *columns)
    table.add_column("load", header_style=HEAD, no_wrap=True)
    for pool in snapshot.pools:
        cells = (str(cell(pool)) for cell in columns.values())
        table.add_row(Text(pool.name, style="bold"), *cells, _load(pool))
    return table


def _load(pool: Pool) -> Text:
    if pool.capacity == 0:
        return Text("no slots" if pool.workers else "no workers", style="dim")
    full = pool.free == 0
    style = "yellow" if full else "green"
    label = "FULL" if full else f"{100 * pool.in_flight // pool.capacity:>3}%"
    return _bar(((pool.in_flight, style),), pool.capacity, BAR) + Text(f" {label}", style=style)


def _verdict(snapshot: Snapshot) -> Text:
    """Spillover in words: is the first pool full, and which later pools take the rest."""
    first, *later = snapshot.pools
    spilling = ", ".join(f"{p.name} runs {p.in_flight}" for p in later if p.in_flight)
    if first.capacity == 0:
        state = f"{first.name} has no {'slots' if first.workers else 'workers'}"
    else:
        state = f"{first.name} full" if first.free == 0 else f"{first.name} has {first.free} free"
    text = Text()
    if spilling and first.free == 0:
        text.append("⇢ spillover: ", style="bold yellow").append(f"{state}, {spilling}")
    elif spilling:  # an earlier spillover still running, or jobs a rule or pin sent there
        text.append(f"{state}; {spilling}", style="green")
    elif first.in_flight:
        text.append(f"{state}: no spillover", style="green" if first.free else "yellow")
    else:
        text.append(f"{state}, nothing running", style="dim")
    backlogged = sum(b.depth for b in snapshot.backlogs)
    if backlogged and all(p.free == 0 for p in snapshot.pools):
        text.append(f" · no free slot, {backlogged} wait in backlogs", style="bold red")
    return text


def _queues(snapshot: Snapshot) -> Table:
    side = snapshot.conductor
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style=HEAD, no_wrap=True)
    grid.add_column()
    backlogs = [(b.name.removeprefix("backlog:"), b.depth) for b in snapshot.backlogs]
    grid.add_row("backlogs", _counts(backlogs))
    due = f" (next {side.next_due_in:.1f}s)" if side.next_due_in is not None else ""
    waiting = [(f"waiting {p.name}", p.waiting) for p in snapshot.pools if p.waiting]
    grid.add_row(
        "conductor",
        _counts(
            [("live", len(side.live)), ("taken", side.processing), ("ready", side.ready)]
            + ([("orphaned", side.orphaned)] if side.orphaned else [])
            + [(f"deferred{due}", side.deferred)]
            + (waiting or [("waiting", 0)])
            + [("dead letters", snapshot.dead_letters)]
        ),
    )
    return grid


def _counts(pairs: list[tuple[str, int]]) -> Text:
    text = Text()
    for index, (label, count) in enumerate(pairs):
        if index:
            text.append(" · ", style="dim")
        text.append(f"{label} ")
        alarm = count and label == "dead letters"
        text.append(str(count), style="bold red" if alarm else "bold" if count else "dim")
    return text


def _rate_limits(snapshot: Snapshot) -> Table:
    table = _table("rate limit", "rate", "burst", "tokens")
    table.add_column("", no_wrap=True)
    for bucket in snapshot.rate_limits:
        ahead = bucket.full_in - bucket.burst / bucket.rate
        table.add_row(
            bucket.name,
            f"{bucket.rate:g}/s",
            str(bucket.burst),
            f"{bucket.tokens:.1f}",
            _bar(((bucket.tokens, "cyan"),), bucket.burst, min(bucket.burst, BAR))
            + Text(f" {ahead:.1f}s reserved" if ahead > 0 else "", style="yellow"),
        )
    return table


def _batches(batches: list[Batch], room: int | None) -> Table:
    shown = batches if room is None or room >= len(batches) else batches[: max(room - 1, 0)]
    table = _table("batch", "progress", "done", "failed", "pending")
    table.columns[1].justify = "left"
    for batch in shown:
        bar = _bar(((batch.done, "green"), (batch.failed, "red")), batch.total, 16)
        state = "✓" if batch.settled else ("…" if not batch.dispatched else " ")
        table.add_row(
            Text(batch.id, overflow="ellipsis", no_wrap=True),
            bar + Text(f" {batch.done + batch.failed}/{batch.total} {state}"),
            str(batch.done),
            Text(str(batch.failed), style="red" if batch.failed else ""),
            str(batch.pending) + ("~" if not batch.counts_exact else ""),
        )
    if len(shown) < len(batches):
        table.add_row(Text(f"… {len(batches) - len(shown)} older", style="dim"))
    return table


def _table(*headers: str) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style=HEAD, expand=False)
    table.add_column(headers[0], no_wrap=True, max_width=22)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def _bar(parts: tuple[tuple[float, str], ...], total: float, width: int) -> Text:
    text, used = Text(), 0
    for amount, style in parts:
        cells = min(width - used, round(width * amount / total)) if total > 0 else 0
        text.append("█" * cells, style=style)
        used += cells
    return text.append("░" * (width - used), style="grey35")


def _height(renderable: RenderableType, width: int) -> int:
    return len(Console(width=width).render_lines(renderable, pad=False))
