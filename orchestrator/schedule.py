"""A schedule's setting (`[[schedules]]` in orchestrator.toml), its checks, and its ticks.

Cron expressions are parsed and evaluated by `cronsim` (the evaluator healthchecks.io
runs on), in the schedule's time zone (`zoneinfo`); across a DST change it behaves as
cron does (its README: a time skipped by the spring change fires once, right after the
gap; a time the autumn change repeats fires once, the first time). `every` ticks are
aligned on the Unix epoch, so every conductor computes the same ticks.
"""

from __future__ import annotations

import argparse
import difflib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from orchestrator.keys import backlog_name

Overlap = Literal["skip", "queue", "cancel_previous"]
Missed = Literal["run_once", "skip"]
AfterPolicy = Literal["hold", "run", "cancel"]
# What a tick can end in: `schedules`, `status` and the metrics show the last one.
OUTCOMES = ("dispatched", "nothing", "failed", "skipped", "missed", "paused")
SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScheduleSettings(BaseModel):
    """One `[[schedules]]` table: which workflow to plan, with which arguments, onto
    which backlog, when (`cron` or `every`), and what to do when the last run is late."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SCHEDULE_NAME)
    workflow: str
    args: list[str] = Field(default_factory=list)
    backlog: str
    cron: str | None = None
    every: str | None = None
    timezone: str = "UTC"
    # The last run's batch has not settled when a tick comes: `skip` the tick, `queue`
    # it behind that batch (dispatch --after), or `cancel_previous` and run.
    overlap: Overlap = "skip"
    # A tick that passed while no conductor ran (found late at start): `run_once` fires
    # the latest such tick once (a nightly repair missed during a deploy still runs
    # that night); `skip` records it as missed and waits for the next one.
    missed: Missed = "run_once"
    # Batches the tick's batch waits for (dispatch --after): the latest batch of each
    # schedule named here, and how a failed one is taken (`after_policy`).
    after: list[str] = Field(default_factory=list)
    after_policy: AfterPolicy = "hold"
    # Longest the planner may run; it is stopped then and the tick's outcome is failed.
    plan_timeout: PositiveFloat = 600.0

    @field_validator("backlog")
    @classmethod
    def _backlog(cls, value: str) -> str:
        return backlog_name(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. UTC, Europe/Berlin)") from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"cron {value!r} does not parse: {exc}") from None
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None and every_seconds(value) < 1:
            raise ValueError(f"every {value!r} is below one second")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSettings:
        if (self.cron is None) == (self.every is None):
            raise ValueError(
                f"schedule {self.name!r}: give exactly one of cron (e.g. '0 2 * * *') or "
                "every (e.g. '10m', '5s')"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def period(self) -> float | None:
        """Seconds between ticks of an `every` schedule; None for cron."""
        return every_seconds(self.every) if self.every is not None else None

    def next_tick(self, after: float) -> float:
        """The first tick strictly after the Unix time `after`."""
        if (period := self.period) is not None:
            return (int(after // period) + 1) * period
        assert self.cron is not None
        start = datetime.fromtimestamp(int(after), self.zone)
        return next(iter(CronSim(self.cron, start))).timestamp()

    def last_tick(self, at: float) -> float:
        """The latest tick at or before the Unix time `at`."""
        if (period := self.period) is not None:
            return (at // period) * period
        assert self.cron is not None
        # cronsim's reverse search excludes its start: start one second on
        start = datetime.fromtimestamp(int(at) + 1, self.zone)
        return next(iter(CronSim(self.cron, start, reverse=True))).timestamp()


def every_seconds(text: str) -> float:
    """`10m`, `5s`, `2h`, `1d`, `1.5s`, a bare number of seconds: in seconds."""
    match = _EVERY.match(text)
    if match is None:
        raise ValueError(f"every {text!r} is not a duration (e.g. '10m', '5s', '2h', '1d')")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def tick_label(tick: float, *, seconds: bool = False) -> str:
    """A tick as it appears in its batch name, in UTC: `2026-12-06T01:00Z`, or with
    `seconds` `2026-12-06T01:00:05Z`."""
    moment = datetime.fromtimestamp(tick, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%dT%H:%MZ")


def batch_name(schedule: ScheduleSettings, tick: float, *, manual: bool = False) -> str:
    """The batch of `schedule`'s tick: one name per tick, so a tick is dispatched once.
    Seconds are shown for an `every` schedule whose period is not whole minutes, for
    every tick alike, so that a schedule's batch names sort as its ticks do, and for a
    `manual` run (`schedules run`), which may come any second."""
    period = schedule.period
    seconds = manual or (period is not None and period % 60 != 0)
    return f"{schedule.name}@{tick_label(tick, seconds=seconds)}"


class SchedulePlaceError(ValueError):
    """A problem of one `[[schedules]]` table as a whole (a name used twice, an unknown
    workflow): which table and key, so the message can name its line."""

    def __init__(self, index: int, key: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.key = key


class ArgumentsError(ValueError):
    """A schedule's `args` the workflow's planner does not take."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ArgumentsError(message)


def parse_plan_args(workflow: Any, args: list[str]) -> argparse.Namespace:
    """`args` as `orchestrator plan WORKFLOW ARGS` reads them; ArgumentsError if not."""
    parser = _Parser(prog=f"orchestrator plan {workflow.name}", add_help=False)
    workflow.configure(parser)
    return parser.parse_args(args)


def check_schedules(schedules: list[ScheduleSettings]) -> list[ScheduleSettings]:
    """Names unique, workflows that exist and take the `args`, `after` naming other
    schedules; the first problem raises `SchedulePlaceError`."""
    if not schedules:
        return schedules
    from orchestrator.workflow import load_workflows

    seen: set[str] = set()
    workflows, broken = load_workflows()
    names = {s.name for s in schedules}
    for index, schedule in enumerate(schedules):
        if schedule.name in seen:
            raise SchedulePlaceError(
                index, "name", f"schedule name {schedule.name!r} is used twice"
            )
        seen.add(schedule.name)
        if schedule.workflow not in workflows:
            known = sorted(workflows)
            close = difflib.get_close_matches(schedule.workflow, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            why = (
                f" (it failed to load: {broken[schedule.workflow]})"
                if schedule.workflow in broken
                else ""
            )
            listed = ", ".join(known)
            message = f"unknown workflow {schedule.workflow!r}{why}{hint} (known: {listed})"
            raise SchedulePlaceError(index, "workflow", message)
        try:
            parse_plan_args(workflows[schedule.workflow], schedule.args)
        except ArgumentsError as exc:
            raise SchedulePlaceError(
                index, "args", f"the {schedule.workflow} planner refuses them: {exc}"
            ) from None
        for other in schedule.after:
            if other not in names or other == schedule.name:
                raise SchedulePlaceError(
                    index, "after", f"after names {other!r}, not another schedule"
                )
    return schedules


def describe_schedule_error(error: Any, source: str) -> str | None:
    """A pydantic error about a `[[schedules]]` table as one line naming the file, the
    line and the setting (`orchestrator.toml:12: … schedules[1].cron: …`); None for an
    error about anything else."""
    place = _schedule_place(error)
    if place is None:
        return None
    index, key = place
    line = _schedule_line(Path(source), index, key)
    where = f"{source}:{line}: " if line else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    name = f"schedules[{index}]" + (f".{key}" if key else "")
    return f"{where}invalid configuration: {name}: {message}"


def _schedule_place(error: Any) -> tuple[int, str] | None:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SchedulePlaceError):
        return cause.index, cause.key
    loc = error["loc"]
    if len(loc) >= 2 and loc[0] == "schedules" and isinstance(loc[1], int):
        return loc[1], str(loc[2]) if len(loc) > 2 else ""
    return None


def _schedule_line(path: Path, index: int, key: str) -> int | None:
    """The line of `key` in the `index`th `[[schedules]]` table of the TOML file (that
    table's header when the key is not written there), or None when not from the file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    header = re.compile(r"^\s*\[\[\s*schedules\s*\]\]")
    starts = [n for n, text in enumerate(lines) if header.match(text)]
    if index >= len(starts):
        return None
    start = starts[index]
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=") if key else None
    for n in range(start + 1, len(lines)):
        if lines[n].lstrip().startswith("["):
            break
        if assignment is not None and assignment.match(lines[n]):
            return n + 1
    return start + 1
