"""`orchestrator schedules [list | run NAME | pause NAME | resume NAME]`: the schedules
of the settings (`[[schedules]]`), what each last did, and a person's hand on them."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_FAILURE, EXIT_OK, UserError
from orchestrator.settings import Settings

ORDER = 66


def register(commands: Any) -> None:
    schedules = commands.add_parser(
        "schedules",
        help="list the schedules (next tick, last tick, last batch, outcome); run, pause, resume",
        description=(
            "The [[schedules]] of the settings: workflows the conductors plan and dispatch "
            "on time, one conductor per tick. Without an action, lists each with its next "
            "tick, last tick, last batch and that tick's outcome."
        ),
    )
    schedules.add_argument(
        "action",
        nargs="?",
        choices=["list", "run", "pause", "resume"],
        default="list",
        help=(
            "list (default); run NAME: fire a tick now (its batch is NAME@<now>); pause "
            "NAME: its ticks pass unfired until resume (kept in Redis, across restarts)"
        ),
    )
    schedules.add_argument("name", nargs="?", metavar="NAME", help="the schedule to act on")
    schedules.add_argument("--json", action="store_true", help="list as one JSON document")
    add_common_options(schedules)
    schedules.set_defaults(command=_schedules)


def _schedules(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.keys import Keys
    from orchestrator.schedules.state import ScheduleStore

    if options.action == "list":
        if options.name:
            raise UserError("schedules: list takes no NAME")
        schedule = None
    else:
        schedule = _named(settings, options.name, options.action)

    async def run() -> Any:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-schedules"
        ) as redis:
            store = ScheduleStore(redis, Keys(settings.namespace))
            now = time.time()
            if options.action == "list":
                return await store.states(list(settings.schedules), now)
            assert schedule is not None
            if options.action == "pause":
                return await store.pause(schedule.name, now)
            if options.action == "resume":
                return await store.resume(schedule.name)
            from orchestrator.schedules.firing import fire

            return await fire(settings, redis, schedule, float(int(now)), manual=True)

    done = run_async(run)
    if options.action == "list":
        _print_list(done, as_json=options.json)
    elif options.action in ("pause", "resume"):
        verb = "paused" if options.action == "pause" else "resumed"
        print(
            f"{verb} {options.name}"
            if done
            else f"{options.name} was {'already' if verb == 'paused' else 'not'} paused"
        )
    else:
        print(f"{done.outcome}: {done.detail}" + (f" (batch {done.batch})" if done.batch else ""))
        return EXIT_FAILURE if done.outcome == "failed" else EXIT_OK
    return EXIT_OK


def _named(settings: Settings, name: str | None, action: str) -> Any:
    import difflib

    if not name:
        raise UserError(f"schedules {action}: name the schedule (schedules {action} NAME)")
    known = {s.name: s for s in settings.schedules}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(known) or "none: add [[schedules]] to orchestrator.toml"
    raise UserError(f"unknown schedule {name!r}{hint} (configured: {listed})")


def _print_list(states: Any, *, as_json: bool) -> None:
    import orjson

    if as_json:
        print(orjson.dumps([s.as_json() for s in states], option=orjson.OPT_INDENT_2).decode())
        return
    if not states:
        print("no schedules: add [[schedules]] to orchestrator.toml")
        return
    for s in states:
        nxt = "paused" if s.paused_since is not None else _when(s.next_tick)
        print(f"{s.name}: {s.workflow} onto {s.backlog}, {s.timing}")
        print(f"  next tick {nxt}; last tick {_when(s.last_tick)}")
        if s.outcome:
            batch = f" batch {s.last_batch}," if s.last_batch else ""
            print(f"  last:{batch} {s.outcome}: {s.detail}")


def _when(moment: float | None) -> str:
    if moment is None:
        return "none yet"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
