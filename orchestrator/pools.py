"""The settings of a worker pool, and of what acts on pools: its scaler, routing rules,
rate limits (`[[pools]]`, `[pools.scaler]`, `[[rules]]`, `[rate_limits.NAME]` in
`orchestrator.toml`). Part of the one `Settings` object (settings.py), which re-exports
them.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

# Where a worker runs sync (plain `def`) tasks; async tasks always run on its event loop.
Executor = Literal["process", "thread"]


class PoolSettings(BaseModel):
    """A worker pool; pools are tried in `order`, lowest first (metal before cloud)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    order: int = Field(ge=0)
    queue: str | None = None  # arq queue key; default built by Keys.pool_queue(name)
    spill_after: float = Field(default=0.0, ge=0)  # seconds a job waits before it may go here
    max_in_flight: PositiveInt | None = None  # cap on jobs forwarded here and not finished
    scaler: ScalerSettings | None = None  # launch/release workers on demand (elastic cloud)
    executor: Executor | None = None  # where its workers run sync tasks; default: `executor`


class ScalerSettings(BaseModel):
    """How a pool's workers are launched when the pools before it are full, released when
    idle, and kept within a budget (`[pools.scaler]`; see orchestrator/scaling/scaler.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["local", "command"] = "local"
    min_workers: int = Field(default=0, ge=0)
    max_workers: PositiveInt = 3
    slots_per_worker: PositiveInt = 2
    scale_up_after: float = Field(default=5.0, ge=0)  # seconds spill demand must last
    launch_rate: PositiveFloat = 6.0  # most launches per minute
    boot_timeout: PositiveFloat = 60.0  # seconds a launch has to send its first heartbeat
    idle_release_after: float = Field(default=60.0, ge=0)  # seconds idle before release
    price_per_worker_hour: float = Field(default=0.0, ge=0)
    budget_per_day: float | None = Field(default=None, ge=0)  # hard cap (UTC day); None: none
    # `command` provider: shell commands; placeholders {pool} {target} {count} {launch_id}
    # (launch) and {pool} {target} {worker} (release).
    launch: str | None = None
    release: str | None = None
    command_timeout: PositiveFloat = 60.0

    @model_validator(mode="after")
    def _consistent(self) -> ScalerSettings:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) is more than max_workers ({self.max_workers})"
            )
        if self.provider == "command" and not self.launch:
            raise ValueError('the "command" provider needs a launch command (launch = "…")')
        for name, template, allowed in (
            ("launch", self.launch, ("pool", "target", "count", "launch_id")),
            ("release", self.release, ("pool", "target", "worker")),
        ):
            try:
                parsed = string.Formatter().parse(template or "")
                used = {f for _, f, _, _ in parsed if f is not None}
            except ValueError as exc:
                raise ValueError(f"{name} command: {exc}") from None
            if unknown := sorted(used - set(allowed)):
                raise ValueError(
                    f"{name} command: unknown placeholder {{{unknown[0]}}} "
                    f"(it may use {', '.join('{' + a + '}' for a in allowed)})"
                )
        return self


class RoutingRule(BaseModel):
    """`task` glob → pool; rules are checked in order before anything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(min_length=1)
    pool: str


class RateLimit(BaseModel):
    """A token bucket: `rate` tokens a second, holding at most `burst`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: PositiveFloat
    burst: PositiveInt = 1
    # Jobs the forwards may run ahead of the bucket when the one before went out late.
    # 0 (the default) keeps the bucket's bound exact: in any window of t seconds at most
    # burst + rate·t forwards, whatever the conductors' timing. A job is forwarded a
    # little ahead of its instant and due then (lua/forward.lua), so only a conductor
    # that fell behind by more than that lead is late; with burst 1 the bucket has no
    # room for it, so such a forward delays the ones after it. `jitter` = n lets the
    # forwards exceed the bound by up to n jobs instead, so that no lateness adds up.
    jitter: float = Field(default=0.0, ge=0)
