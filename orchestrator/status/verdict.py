"""Spillover in words, said once: `status`, `status --json` and the dashboard's banner
all read it from here, so the same state is never described two ways (the banner once
said "metal has room: no spillover" of a paused metal the CLI called paused)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator.status.model import Pool

Kind = Literal["spillover", "elsewhere", "busy", "idle", "one_pool"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """`kind`: `spillover` (the first pool is full or paused and later pools run work),
    `elsewhere` (later pools run work the first could take: an earlier spill still
    running, or jobs a rule or pin sent there), `busy`, `idle`, `one_pool`."""

    kind: Kind
    state: str  # the first pool's: "metal full", "metal paused", "metal has 3 free"…
    later: str  # what later pools run: "cloud runs 4, 2 queued", or ""

    @property
    def text(self) -> str:
        if self.kind == "spillover":
            return f"spillover: {self.state}, {self.later}"
        if self.kind == "elsewhere":
            return f"{self.state}; {self.later}"
        if self.kind == "busy":
            return f"{self.state}: no spillover"
        return f"{self.state}, nothing running"


def verdict(pools: list[Pool]) -> Verdict:
    """Pools in routing order: the first takes new work while it has room; a later pool
    running work while the first is full (or paused) is the spillover."""
    first, *later = pools
    spilling = ", ".join(_runs(p) for p in later if p.in_flight)
    if first.paused_at is not None:
        state = f"{first.name} paused"
    elif first.capacity == 0:
        state = f"{first.name} has no {'slots' if first.workers else 'workers'}"
    else:
        state = f"{first.name} full" if first.free == 0 else f"{first.name} has {first.free} free"
    if spilling and (first.free == 0 or first.paused_at is not None):
        return Verdict("spillover", state, spilling)
    if spilling:
        return Verdict("elsewhere", state, spilling)
    if first.in_flight:
        return Verdict("busy", state, "")
    return Verdict("one_pool" if not later else "idle", state, "")


def _runs(pool: Pool) -> str:
    """What a pool holds, in the columns' words: running, and queued when any."""
    queued = f", {pool.queued} queued" if pool.queued else ""
    return f"{pool.name} runs {pool.running}{queued}"
