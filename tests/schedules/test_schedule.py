"""A schedule's setting and its ticks (orchestrator/schedule.py): cron in a time zone
across DST changes, `every` aligned on the epoch, batch names, and careless settings
refused in one line naming the file, the line and the setting, exit 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchestrator.errors import ConfigError
from orchestrator.schedule import ScheduleSettings, batch_name
from orchestrator.settings import load_settings

BERLIN = ZoneInfo("Europe/Berlin")


def _nightly(**extra: str) -> ScheduleSettings:
    fields = {"name": "nightly-gap-fill", "workflow": "gap_fill", "backlog": "repair"}
    return ScheduleSettings.model_validate({**fields, "cron": "30 2 * * *", **extra})


def _ticks(schedule: ScheduleSettings, start: datetime, count: int) -> list[datetime]:
    found, at = [], start.timestamp()
    for _ in range(count):
        at = schedule.next_tick(at)
        found.append(datetime.fromtimestamp(at, BERLIN))
    return found


def test_spring_forward_fires_the_skipped_time_once_right_after_the_gap() -> None:
    """Berlin's 29 March 2026 has no 02:30: the tick comes at 03:00 CEST, once, as
    cronsim documents (cron's own rule); the days around it fire at 02:30."""
    ticks = _ticks(_nightly(timezone="Europe/Berlin"), datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert [t.isoformat() for t in ticks] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_fall_back_fires_the_repeated_time_once() -> None:
    """Berlin's 25 October 2026 has 02:30 twice: the schedule fires at the first only."""
    ticks = _ticks(_nightly(timezone="Europe/Berlin"), datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert [t.isoformat() for t in ticks] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_last_tick_and_next_tick_agree_across_the_gap() -> None:
    """The latest tick at or before a moment is the one next_tick found before it."""
    schedule = _nightly(timezone="Europe/Berlin")
    gap_tick = datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN).timestamp()
    assert schedule.last_tick(gap_tick + 30) == gap_tick
    assert schedule.last_tick(gap_tick) == gap_tick
    assert schedule.next_tick(gap_tick) > gap_tick


def test_every_is_aligned_on_the_epoch_and_names_each_tick() -> None:
    """`every = "5s"` ticks on multiples of 5 s, the same for every conductor, and each
    tick's batch name carries its UTC time (with seconds when the period has them, for
    every tick of the schedule, so that its batch names sort as its ticks)."""
    schedule = _nightly(cron=None, every="5s")
    assert schedule.next_tick(1_000_002.5) == 1_000_005
    assert schedule.last_tick(1_000_004.9) == 1_000_000
    tick = datetime(2026, 12, 6, 1, 20, 5, tzinfo=UTC).timestamp()
    assert batch_name(schedule, tick) == "nightly-gap-fill@2026-12-06T01:20:05Z"
    assert batch_name(schedule, tick - 5) == "nightly-gap-fill@2026-12-06T01:20:00Z"
    nightly = datetime(2026, 12, 6, 2, 0, tzinfo=BERLIN).timestamp()
    cron = _nightly(timezone="Europe/Berlin")
    assert batch_name(cron, nightly) == "nightly-gap-fill@2026-12-06T01:00Z"
    assert batch_name(cron, nightly, manual=True) == "nightly-gap-fill@2026-12-06T01:00:00Z"
    assert (
        batch_name(_nightly(cron=None, every="10m"), nightly)
        == "nightly-gap-fill@2026-12-06T01:00Z"
    )


CASES = [
    ('cron = "0 2 * *"', 6, "schedules[0].cron: cron '0 2 * *' does not parse"),
    ('every = "0.5s"', 6, "schedules[0].every: every '0.5s' is below one second"),
    ('every = "soon"', 6, "schedules[0].every: every 'soon' is not a duration"),
    ('cron = "0 2 * * *"\ntimezone = "Europe/Berlln"', 7, "unknown time zone 'Europe/Berlln'"),
]


@pytest.mark.parametrize(("timing", "line", "said"), CASES)
def test_careless_timing_names_file_line_and_setting(
    tmp_path: Path, timing: str, line: int, said: str
) -> None:
    """A cron that does not parse, `every` below a second or not a duration, an unknown
    time zone: one line with `file:line:` and the setting."""
    config = tmp_path / "orchestrator.toml"
    config.write_text(
        'backlogs = ["backlog:a"]\n\n[[schedules]]\nname = "n"\nworkflow = "gap_fill"\n'
        f'{timing}\nbacklog = "repair"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert caught.value.message.startswith(f"{config}:{line}: invalid configuration: ")
    assert said in caught.value.message


def test_name_twice_unknown_workflow_and_bad_args_are_refused(tmp_path: Path) -> None:
    """A name used twice, a workflow that does not exist (with a did-you-mean), args its
    planner refuses: each named at its line."""
    config = tmp_path / "orchestrator.toml"
    table = '[[schedules]]\nname = "{}"\nworkflow = "{}"\nbacklog = "repair"\nevery = "1h"\n'
    config.write_text(table.format("a", "gap_fill") + table.format("a", "gap_fill"))
    with pytest.raises(ConfigError, match=r":7: .*schedules\[1\]\.name: schedule name 'a' is used"):
        load_settings(config)
    config.write_text(table.format("a", "gap_fil"))
    with pytest.raises(
        ConfigError, match=r":3: .*unknown workflow 'gap_fil'; did you mean 'gap_fill'"
    ):
        load_settings(config)
    config.write_text(table.format("a", "gap_fill") + 'args = ["--databse", "x.db"]\n')
    with pytest.raises(
        ConfigError, match=r":6: .*schedules\[0\]\.args: the gap_fill planner refuses"
    ):
        load_settings(config)


def test_a_conductor_with_a_bad_schedule_never_starts(tmp_path: Path) -> None:
    """The conductor reads the settings first: a bad schedule ends it at once, exit 2,
    one line on stderr — never a conductor that starts and silently never fires."""
    config = tmp_path / "orchestrator.toml"
    config.write_text(
        '[[schedules]]\nname = "n"\nworkflow = "gap_fill"\nbacklog = "r"\ncron = "61 * * * *"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "conductor"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("orchestrator: error: orchestrator.toml:5: invalid configuration: ")
