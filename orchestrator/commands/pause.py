"""`orchestrator pause BACKLOG… | --pool POOL…` and `orchestrator resume …`: stop taking
work from backlogs, or giving work to pools, and start again. See `orchestrator.control.pausing`."""

from __future__ import annotations

import argparse
import difflib
import time
from typing import TYPE_CHECKING, Any

from orchestrator.commands.common import add_common_options, backlog_arg, run_async
from orchestrator.errors import EXIT_OK, UserError
from orchestrator.job import job_count
from orchestrator.settings import Settings

if TYPE_CHECKING:  # imported when run, as every command does, to keep `--help` quick
    from orchestrator.control.pausing import Change, Kind

ORDER = 65


def register(commands: Any) -> None:
    pause = commands.add_parser(
        "pause",
        help="stop conductors taking a backlog's jobs, or forwarding jobs to a pool",
        description=(
            "Pause backlogs: no conductor takes their jobs (dispatch still queues onto "
            "them) until `orchestrator resume`. Or pause pools (--pool): they get no new "
            "jobs, so work spills over to the next pool; jobs already forwarded to them "
            "that no worker has started go back in line to run elsewhere, and running jobs "
            "finish. The state is kept in Redis: it outlives conductor restarts. Pausing "
            "what is paused already says so and changes nothing."
        ),
    )
    resume = commands.add_parser(
        "resume",
        help="let conductors take a paused backlog's jobs, or use a paused pool, again",
        description=(
            "Resume paused backlogs, or pools (--pool): conductors take work from them "
            "at once. Resuming what is not paused says so and changes nothing."
        ),
    )
    for parser, verb in ((pause, "pause"), (resume, "resume")):
        parser.add_argument(
            "backlogs",
            nargs="*",
            type=backlog_arg,
            metavar="BACKLOG",
            help=f"backlogs to {verb}, e.g. backlog:stress (a bare 'stress' means the same)",
        )
        parser.add_argument(
            "--pool",
            dest="pools",
            nargs="+",
            default=[],
            metavar="POOL",
            help=f"pools to {verb} instead (configured names, e.g. metal)",
        )
        add_common_options(parser)
    pause.set_defaults(command=_pause)
    resume.set_defaults(command=_resume)


def _pause(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.pausing import pause_backlogs, pause_pools

    pools = _pools(options, settings, "pause")
    backlogs = list(dict.fromkeys(options.backlogs))
    now = time.time()

    async def run(redis: Any, keys: Any) -> list[Change]:
        if pools:
            by_name = {pool.name: pool for pool in settings.pools}
            return await pause_pools(redis, keys, [by_name[name] for name in pools], now)
        return await pause_backlogs(redis, keys, backlogs, now, settings.backlogs)

    for change in _with_redis(settings, run):
        print(_paused_line(change, "pool" if pools else "backlog", now))
    return EXIT_OK


def _resume(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.pausing import resume

    pools = _pools(options, settings, "resume")
    kind: Kind = "pool" if pools else "backlog"

    async def run(redis: Any, keys: Any) -> list[Change]:
        return await resume(redis, keys, kind, pools or list(dict.fromkeys(options.backlogs)))

    now = time.time()
    for change in _with_redis(settings, run):
        what = f"{kind} {change.name}" if kind == "pool" else change.name
        if change.changed and change.since is not None:
            print(f"resumed {what} (paused {_for(now - change.since)})")
        else:
            print(f"{what} was not paused")
    return EXIT_OK


def _pools(options: argparse.Namespace, settings: Settings, verb: str) -> list[str]:
    """The pools named (checked against the configured ones), or [] for backlogs."""
    if bool(options.pools) == bool(options.backlogs):
        raise UserError(f"{verb}: name backlogs, or pools with --pool (not both)")
    configured = settings.pool_names
    for name in options.pools:
        if name not in configured:
            close = difflib.get_close_matches(name, configured, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{verb}: {name!r} is not a configured pool ({', '.join(configured)}){hint}"
            )
    return list(dict.fromkeys(options.pools))


def _paused_line(change: Change, kind: str, now: float) -> str:
    if kind == "pool":
        what = f"pool {change.name}"
        back = change.taken_back
        moved = (
            f"; {job_count(back)} it had not started went back in line to run elsewhere"
            if back
            else ""
        )
        if not change.changed:
            return f"{what} was already paused ({_for(now - (change.since or now))}){moved}"
        return f"paused {what}: no new jobs go there, its running jobs finish{moved}"
    if not change.changed:
        return f"{change.name} was already paused ({_for(now - (change.since or now))})"
    if not change.known:
        return f"paused {change.name} (nothing was dispatched to it yet)"
    return f"paused {change.name}: {job_count(change.waiting)} wait there until it is resumed"


def _for(seconds: float) -> str:
    """`for 3m`: how long something has been paused, in its largest whole unit."""
    whole = max(int(seconds), 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if whole >= size:
            return f"for {whole // size}{unit}"
    return f"for {whole}s"


def _with_redis(settings: Settings, action: Any) -> Any:
    from orchestrator.connection import connect
    from orchestrator.keys import Keys

    async def run() -> Any:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-pause"
        ) as redis:
            return await action(redis, Keys(settings.namespace))

    return run_async(run)
