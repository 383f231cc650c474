"""The pieces a status view is drawn with: glyph bars, counted labels, ages, and names
cut to fit. Glyphs, not colour alone (█ used or done, ▓ failed, ▒ cancelled, ░ free), so a
view still reads on a terminal without colour or in a pasted capture."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

HEAD = "bold"


def jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def age(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def counts(pairs: list[tuple[str, int]]) -> Text:
    text = Text()
    for index, (label, count) in enumerate(pairs):
        if index:
            text.append(" · ", style="dim")
        text.append(f"{label} ")
        alarm = count and label == "dead letters"
        text.append(str(count), style="bold red" if alarm else "bold" if count else "dim")
    return text


def cut(name: str, room: int) -> str:
    """The name within `room` cells, cut in the middle: batches of one workflow share a
    long start and differ at the end (`…_01`, `…_02`), so most of the end is kept."""
    if len(name) <= room:
        return name
    head = (room - 1) // 3
    return name[:head] + "…" + name[len(name) - (room - 1 - head) :]


def table(*headers: str) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style=HEAD, expand=False)
    table.add_column(headers[0], no_wrap=True, max_width=22)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def bar(parts: tuple[tuple[float, str, str], ...], total: float, width: int) -> Text:
    """`parts`: (amount, style, glyph); what is left of `total` is drawn ░."""
    text, used = Text(), 0
    for amount, style, glyph in parts:
        cells = min(width - used, round(width * amount / total)) if total > 0 else 0
        text.append(glyph * cells, style=style)
        used += cells
    return text.append("░" * (width - used), style="grey35")


def height(renderable: RenderableType, width: int) -> int:
    return len(Console(width=width).render_lines(renderable, pad=False))
