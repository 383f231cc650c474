"""How a status snapshot reads on a terminal, once (`status`) or live (`watch`).

Laid out for 80x24 first: pools on top, since the question a reader comes with is
"is metal full and is cloud taking the overflow?" — a line under the pools answers it
in words. Bars are drawn with glyphs (█ used or done, ▓ failed, ░ free) rather than
rich's colour-only progress bars, so they still read on a terminal without colour or in
a pasted capture; for the same reason a batch that settled says so with a mark (✓ or
✗), not a colour alone. When the screen is short, batches give way first (the newest
are kept); batch names take the width left, and when cut keep their end, where
`_01` and `_02` differ. Under the pools, a pool with a scaler says what its workers are
doing, what it spent today against its budget, and what the scaler last decided and
why; a pool without one, only when workers are draining.

The pieces every part is drawn with (bars, counts, ages, cut names) are `glyphs`; the
parts themselves stay here because they share one layout budget (the screen's height
and width), which a split would have to pass around.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.money import money
from orchestrator.status import glyphs
from orchestrator.status.model import Scaler
from orchestrator.status.snapshot import Batch, Pool, Snapshot
from orchestrator.status.verdict import verdict

BAR = 10
WIDE_BAR = 16  # a batch's bar from 100 columns on
WIDE = 100
HEAD = glyphs.HEAD
NO_WORKER_LINES = 3  # tasks listed as waiting for a worker; the rest are summed up


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
        _title(snapshot, note, width),
        Group(_pools(snapshot, width), _verdict(snapshot), *_elastic(snapshot)),
        _queues(snapshot),
    ]
    if snapshot.rate_limits:
        parts.append(_rate_limits(snapshot))
    if snapshot.batches:
        room = None if height is None else height - glyphs.height(_spaced(parts), width) - 3
        parts.append(_batches(snapshot.batches, room, width, snapshot.time))
    return _spaced(parts)


def _spaced(parts: list[RenderableType]) -> Group:
    """Sections one blank line apart; the title sits directly on the pools."""
    title, *sections = parts
    spaced: list[RenderableType] = [title]
    for index, section in enumerate(sections):
        spaced += [section] if index == 0 else [Text(""), section]
    return Group(*spaced)


def _title(snapshot: Snapshot, note: str | Text | None, width: int) -> RenderableType:
    """Namespace, Redis clock and which Redis (and why that one) on one line; the Redis
    goes to a line of its own when they do not fit, cut at its end."""
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.time))
    title = Text.assemble(
        ("orchestrator status", "bold"), f" · namespace {snapshot.namespace} · {clock}"
    )
    right = Text(note, style="dim") if isinstance(note, str) else note or Text("")
    source = None
    if (redis := snapshot.redis) is not None:
        extra = f", {redis.detail}" if redis.detail else ""
        source = Text(f"{redis.url} (from {redis.origin}{extra})", style="dim")
        if title.cell_len + 3 + source.cell_len + 1 + right.cell_len <= width:
            title, source = Text.assemble(title, " · ", source), None
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True, min_width=title.cell_len)  # the note gives way, not the clock
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
    grid.add_row(title, right)
    if source is None:
        return grid
    source.no_wrap, source.overflow = True, "ellipsis"
    return Group(grid, source)


def _pools(snapshot: Snapshot, width: int) -> Table:
    """One row per pool; below 80 columns the secondary numbers give way to the bar."""
    columns: dict[str, Callable[[Pool], object]] = {
        "workers": lambda p: len(p.workers),
        "slots": lambda p: p.capacity,
        "in flight": lambda p: p.in_flight,
        "running": lambda p: p.running,
        "queued": lambda p: p.queued,
        "free": lambda p: p.free,
        "prefetch": lambda p: p.prefetch,
        "beat": lambda p: (
            "-" if p.oldest_heartbeat_age is None else f"{p.oldest_heartbeat_age:.1f}s"
        ),
    }
    if not any(pool.prefetch for pool in snapshot.pools):  # long jobs: no prefetch at all
        del columns["prefetch"]
    if width < 80:
        columns = {k: v for k, v in columns.items() if k in ("slots", "in flight", "free")}
    table = glyphs.table("pool", *columns)
    table.add_column("load", header_style=HEAD, no_wrap=True)
    for pool in snapshot.pools:
        cells = (str(cell(pool)) for cell in columns.values())
        table.add_row(Text(pool.name, style="bold"), *cells, _load(pool))
    return table


def _load(pool: Pool) -> Text:
    if pool.paused_at is not None:  # its running jobs finish; it gets no new ones
        bar = glyphs.bar(((pool.in_flight, "yellow", "█"),), pool.capacity, BAR)
        return bar + Text(" PAUSED", style="bold yellow")
    if pool.capacity == 0:
        return Text("no slots" if pool.workers else "no workers", style="dim")
    full = pool.free == 0
    style = "yellow" if full else "green"
    label = "FULL" if full else f"{100 * pool.in_flight // pool.capacity:>3}%"
    bar = glyphs.bar(((pool.in_flight, style, "█"),), pool.capacity, BAR)
    return bar + Text(f" {label}", style=style)


def _verdict(snapshot: Snapshot) -> Text:
    """Spillover in words (`status.verdict`, the same words as the dashboard's banner)."""
    said = verdict(snapshot.pools)
    first = snapshot.pools[0]
    text = Text()
    if said.kind == "spillover":
        text.append("⇢ spillover: ", style="bold yellow").append(f"{said.state}, {said.later}")
    elif said.kind == "elsewhere":
        text.append(said.text, style="green")
    elif said.kind == "busy":
        text.append(said.text, style="green" if first.free else "yellow")
    else:
        text.append(said.text, style="dim")
    backlogged = sum(b.depth for b in snapshot.backlogs)
    if backlogged and all(p.free == 0 for p in snapshot.pools):
        text.append(f" · no free slot, {backlogged} wait in backlogs", style="bold red")
    return text


def _elastic(snapshot: Snapshot) -> list[Table]:
    """Per pool with a scaler: its workers by state and its target, today's spend, and
    the last decision, or that the budget stops launches; per pool without one, its
    draining workers, if any. Nothing when there is neither."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style=HEAD, no_wrap=True, max_width=22, overflow="ellipsis")
    grid.add_column(overflow="fold")
    for index, pool in enumerate(snapshot.pools):
        draining = sum(w.draining for w in pool.workers)
        if pool.scaler is not None:
            before = [p.name for p in snapshot.pools[:index]]
            first, *rest = _scaler_rows(pool.scaler, before, draining, snapshot.time)
            grid.add_row(f"{pool.name} scaler", first)
            for row in rest:
                grid.add_row("", row)
        elif draining:
            workers = "1 worker" if draining == 1 else f"{draining} workers"
            line = f"{workers} draining: no new jobs, running ones finish"
            grid.add_row(pool.name, Text(line, style="yellow"))
    return [grid] if grid.row_count else []


def _scaler_rows(scaler: Scaler, before: list[str], draining: int, now: float) -> list[Text]:
    """Workers by state and the target; the spend; the last decision or the budget's stop.
    `before`: the pools jobs fall back on once the budget stops launches; `draining`:
    workers whose heartbeat says so, shown when no scaler counts them."""
    spend = Text(money(scaler.spend_today))
    spend.append(
        " today, no budget" if scaler.budget is None else f" of {money(scaler.budget)} today"
    )
    if scaler.price_per_worker_hour:
        spend.append(f" ({money(scaler.price_per_worker_hour)} a worker-hour)", style="dim")
    if not scaler.running or scaler.workers is None:
        line = Text("no scaler running", style="yellow")
        if draining:
            line.append(" · ", style="dim").append(f"{draining} draining")
        return [line, spend]
    counts = scaler.workers
    states = {
        "launching": counts.launching, "active": counts.active, "idle": counts.idle,
        "draining": counts.draining,
    }  # fmt: skip
    workers = Text(" · ".join(f"{n} {state}" for state, n in states.items() if n) or "no workers")
    if scaler.target is not None:
        demand = "" if scaler.demand is None else f" for {glyphs.jobs(scaler.demand)}"
        workers.append(f" → target {scaler.target}{demand}")
    rows = [workers, spend]
    said = scaler.decision
    if said is not None and not (scaler.budget_reached and said.event == "budget_reached"):
        ago = "" if said.at is None else f" {glyphs.age(now - said.at)} ago"
        reason = f": {said.reason}" if said.reason else ""
        rows.append(Text(f"{said.event}{ago}{reason}", style="dim"))
    if scaler.budget_reached:  # the budget's own reason repeats the spend: not shown
        wait = f"jobs wait for {' and '.join(before)}" if before else "jobs wait"
        rows.append(Text(f"budget reached: no launches; {wait}", style="bold yellow"))
    return rows


def _queues(snapshot: Snapshot) -> RenderableType:
    side = snapshot.conductor
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style=HEAD, no_wrap=True)
    grid.add_column()
    grid.add_row("backlogs", _backlogs(snapshot))
    due = f" (next {side.next_due_in:.1f}s)" if side.next_due_in is not None else ""
    waiting = [(f"waiting {p.name}", p.waiting) for p in snapshot.pools if p.waiting]
    grid.add_row(
        "conductor",
        glyphs.counts(
            [("live", len(side.live)), ("taken", side.processing), ("ready", side.ready)]
            + ([("orphaned", side.orphaned)] if side.orphaned else [])
            + [(f"deferred{due}", side.deferred)]
            + (waiting or [("waiting", 0)])
            + [("dead letters", snapshot.dead_letters)]
        ),
    )
    if not snapshot.no_worker:
        return grid
    return Group(grid, *_no_worker(snapshot))


def _backlogs(snapshot: Snapshot) -> Text:
    """Each backlog's depth; then, when it has jobs on levels other than 0, how many per
    level (highest first, as they are taken), and PAUSED when no conductor takes them."""
    text = Text()
    for index, backlog in enumerate(snapshot.backlogs):
        if index:
            text.append(" · ", style="dim")
        text.append(f"{backlog.name.removeprefix('backlog:')} ")
        text.append(str(backlog.depth), style="bold" if backlog.depth else "dim")
        if any(level.level for level in backlog.levels):
            by_level = ", ".join(
                f"{'+' if level.level > 0 else ''}{level.level}: {level.depth}"
                for level in backlog.levels
            )
            text.append(f" (priority {by_level})", style="dim")
        if backlog.paused_at is not None:
            text.append(" PAUSED", style="bold yellow")
    return text


def _no_worker(snapshot: Snapshot) -> list[Text]:
    """Jobs no live worker runs the task of: they wait until one comes, so say since when."""
    waiting = list(snapshot.no_worker.items())
    lines = []
    for member, parked in waiting[:NO_WORKER_LINES]:
        task, _, pool = member.partition("@")  # `task@pool`: only that pool may run them
        since = glyphs.age(snapshot.time - parked.since)
        lines.append(
            Text.assemble(
                (f"waiting for a worker{f' in {pool}' if pool else ''} that runs ", "yellow"),
                (task, "bold yellow"),
                (f": {glyphs.jobs(parked.jobs)}, since {since}", "yellow"),
            )
        )
    if rest := waiting[NO_WORKER_LINES:]:
        jobs = glyphs.jobs(sum(parked.jobs for _, parked in rest))
        lines.append(Text(f"… and {jobs} of {len(rest)} more tasks", style="yellow"))
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
    return lines


def _rate_limits(snapshot: Snapshot) -> Table:
    table = glyphs.table("rate limit", "rate", "burst", "tokens")
    table.add_column("", no_wrap=True)
    for bucket in snapshot.rate_limits:
        ahead = bucket.full_in - bucket.burst / bucket.rate
        table.add_row(
            bucket.name,
            f"{bucket.rate:g}/s",
            str(bucket.burst),
            f"{bucket.tokens:.1f}",
            glyphs.bar(((bucket.tokens, "cyan", "█"),), bucket.burst, min(bucket.burst, BAR))
            + Text(f" {ahead:.1f}s reserved" if ahead > 0 else "", style="yellow"),
        )
    return table


def _batches(batches: list[Batch], room: int | None, width: int, now: float) -> Table:
    """Counts take what they need; the names get the rest of the width."""
    shown = batches if room is None or room >= len(batches) else batches[: max(room - 1, 0)]
    bar = WIDE_BAR if width >= WIDE else BAR
    cancelled = any(batch.cancelled for batch in shown)  # a column only while it has any
    expiring = any(b.expires_at is not None or b.kept_forever for b in shown)  # the same
    rows = [_batch_cells(batch, bar, cancelled) for batch in shown]
    if expiring:
        for batch, cells in zip(shown, rows, strict=True):
            cells.append(Text(_expiry(batch, now), style="dim"))
    headers = ("progress", "done", "failed", "dead", *(["cancelled"] if cancelled else []))
    headers += ("pending", *(["expires"] if expiring else []))
    needed = [
        max([len(header), *(cells[index].cell_len for cells in rows)])
        for index, header in enumerate(headers)
    ]
    names = max(12, width - sum(needed) - len(headers))  # one space between columns
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style=HEAD)
    table.add_column("batch", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for batch, cells in zip(shown, rows, strict=True):
        table.add_row(Text(glyphs.cut(batch.id, names), no_wrap=True), *cells)
    if len(shown) < len(batches):
        table.add_row(Text(f"… {len(batches) - len(shown)} older", style="dim"))
    return table


def _batch_cells(batch: Batch, bar: int, cancelled: bool) -> list[Text]:
    """Done in green, failed or dead-lettered in red, cancelled in yellow, each with a
    glyph of its own; once settled, ✓ when every job succeeded, ✗ when any failed, ⊘
    when jobs were cancelled and none failed (⊘… while a cancelled batch settles)."""
    bad = batch.failed + batch.dead_lettered
    parts = ((batch.done, "green", "█"), (bad, "red", "▓"), (batch.cancelled, "yellow", "▒"))
    progress = glyphs.bar(parts, batch.total, bar)
    progress.append(f" {batch.done + bad + batch.cancelled}/{batch.total}")
    if batch.state == "succeeded":
        progress.append(" ✓", style="bold green")
    elif batch.state == "failed":
        progress.append(" ✗", style="bold red")
    elif batch.state == "cancelled":
        progress.append(" ⊘", style="bold yellow")
    elif batch.cancelled_at is not None:
        progress.append(" ⊘…", style="yellow")
    elif not batch.dispatched:
        progress.append(" …", style="dim")
    return [
        progress,
        Text(str(batch.done)),
        Text(str(batch.failed), style="red" if batch.failed else ""),
        Text(str(batch.dead_lettered), style="red" if batch.dead_lettered else ""),
        *(
            [Text(str(batch.cancelled), style="yellow" if batch.cancelled else "")]
            if cancelled
            else []
        ),
        Text(str(batch.pending) + ("~" if not batch.counts_exact else "")),
    ]


def _expiry(batch: Batch, now: float) -> str:
    """When a settled batch leaves Redis for its archive (`retention`): `in 6d`, `due`."""
    if batch.kept_forever:
        return "never"
    if batch.expires_at is None:
        return ""
    left = batch.expires_at - now
    if left <= 0:
        return "due"
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= seconds:
            return f"in {left // seconds:.0f}{unit}"
    return f"in {left:.0f}s"
