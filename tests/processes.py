"""Who is running below a process, from /proc: for tests that check nothing is left
behind (a stack's children, a worker's task processes)."""

from __future__ import annotations

from pathlib import Path


def parent_of(pid: int) -> int:
    """The parent's pid; 0 once the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def children_of(pid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid
    ]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    found, frontier = [], [pid]
    while frontier:
        below = children_of(frontier.pop())
        found += below
        frontier += below
    return found


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pss_bytes(pid: int) -> int:
    """Proportional set size: the process's private memory and its share of what it
    shares (forked pages, libraries); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0
