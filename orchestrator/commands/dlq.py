"""`orchestrator dlq list | show ID | requeue ID…|--all | purge [ID…] [--yes]`: the
dead-letter list, looked at and worked off."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from orchestrator.commands.common import add_common_options, positive_int, run_async
from orchestrator.errors import EXIT_FAILURE, EXIT_OK, UserError
from orchestrator.settings import Settings

if TYPE_CHECKING:  # imported when run, as every command does, to keep `--help` quick
    from redis.asyncio import Redis

    from orchestrator.control.deadletters import Entry, Requeued
    from orchestrator.keys import Keys

_T = TypeVar("_T")

ORDER = 70
WIDTH = 100  # columns a `dlq list` line is kept within
MIN_ERROR = 20  # columns the error keeps however long the job ids are
PROG = "orchestrator"


def register(commands: Any) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="list, show, requeue or purge dead-lettered jobs",
        description=(
            "Jobs that failed max_tries times, kept killing their worker, or could not be "
            "routed end in the dead-letter list. Look at them, put them back in line, or "
            "drop them. A job is named by its id; a record without one (a payload that "
            "did not parse) by the @handle `dlq list` shows."
        ),
    )
    actions = dlq.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", help="one line per dead letter, newest last", description="List dead letters."
    )
    listing.add_argument("--json", action="store_true", help="the records as a JSON array")
    listing.add_argument("--limit", type=positive_int, metavar="N", help="only the newest N")
    listing.set_defaults(command=_list)

    show = actions.add_parser(
        "show",
        help="the whole record of one job: error, receipt, payload",
        description="Show a dead letter's whole record (its newest, when it has several).",
    )
    show.add_argument("ref", metavar="ID", help="job id (or @handle from `dlq list`)")
    show.add_argument("--json", action="store_true", help="only the record, as JSON")
    show.set_defaults(command=_show)

    requeue = actions.add_parser(
        "requeue",
        help="put dead-lettered jobs back in line, ahead of the backlogs",
        description=(
            "Remove each job's record and put its envelope on the ready list, which the "
            "conductor serves first; the job runs afresh under the same id (its tries "
            "counted from one again). Records without a job envelope are refused."
        ),
    )
    requeue.add_argument("refs", nargs="*", metavar="ID", help="job ids to requeue")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    requeue.set_defaults(command=_requeue)

    purge = actions.add_parser(
        "purge",
        help="delete dead letters: the ones named, or all of them",
        description=(
            "Delete the named dead letters, or with no ID all of them — after a yes on "
            "the terminal, or with --yes. Records that arrive meanwhile are kept."
        ),
    )
    purge.add_argument("refs", nargs="*", metavar="ID", help="job ids to delete")
    purge.add_argument("--yes", action="store_true", help="purge all without asking")
    purge.set_defaults(command=_purge)

    for action in (listing, show, requeue, purge):
        add_common_options(action)


# --- the actions ----------------------------------------------------------------------


def _list(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.deadletters import read_all, read_newest

    async def read(redis: Redis, keys: Keys) -> tuple[int, list[Entry]]:
        if options.limit:
            return await read_newest(redis, keys, options.limit)
        entries = await read_all(redis, keys)
        return len(entries), entries

    total, entries = _with_redis(settings, read)
    if options.json:
        records = [{"ref": entry.ref, **entry.record} for entry in entries]
        print(orjson.dumps(records).decode())
    else:
        print("\n".join(table(total, entries, time.time())))
    return EXIT_OK


def _show(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.deadletters import read_all, select

    chosen, _ = select(_with_redis(settings, read_all), [options.ref])
    if not chosen:
        raise UserError(f"{options.ref}: not in the dead-letter list")
    *older, newest = chosen[options.ref]
    record = newest.record
    if not options.json:
        print(f"{newest.ref}: {record['reason']}, {_when(record['at'], time.time())}")
    print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    if older:
        _note(f"{options.ref}: {_count(len(older), 'older record')} too; see `dlq list`")
    return EXIT_OK


def _requeue(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.deadletters import group, read_all, requeue, select

    if bool(options.refs) == options.all:
        raise UserError("dlq requeue: name the jobs to requeue, or give --all (not both)")

    async def run(redis: Redis, keys: Keys) -> tuple[list[str], list[Requeued]]:
        entries = await read_all(redis, keys)
        if options.all:
            return [], await requeue(redis, keys, group(entries))
        chosen, missing = select(entries, options.refs)
        return missing, await requeue(redis, keys, chosen)

    missing, results = _with_redis(settings, run)
    if options.all and not results:
        print("no dead letters to requeue")
        return EXIT_OK
    for ref in missing:
        _note(f"{ref}: not in the dead-letter list")
    failed = 0
    for result in results:
        if result.outcome == "requeued":
            print(f"requeued {result.ref} ({result.detail})")
        elif result.outcome == "gone":
            _note(f"{result.ref}: not in the dead-letter list (requeued or purged meanwhile)")
        elif result.outcome == "live":
            failed += 1
            _note(f"{result.ref}: not requeued: arq still holds the job; try again in a moment")
        else:
            failed += 1
            _note(f"{result.ref}: cannot requeue: {result.detail}")
    done = sum(result.outcome == "requeued" for result in results)
    if done:
        print(f"requeued {_count(done, 'job')} onto the ready list, served before the backlogs")
    return EXIT_FAILURE if failed else EXIT_OK


def _purge(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.control.deadletters import read_all, remove, select

    entries = _with_redis(settings, read_all)
    if options.refs:
        chosen, missing = select(entries, options.refs)
        for ref in missing:
            _note(f"{ref}: not in the dead-letter list")
        entries = [entry for records in chosen.values() for entry in records]
    elif not entries:
        print("no dead letters to purge")
        return EXIT_OK
    elif not options.yes and not _confirm(len(entries)):
        _note("nothing purged")
        return EXIT_FAILURE

    async def delete(redis: Redis, keys: Keys) -> int:
        return await remove(redis, keys, entries)

    removed = _with_redis(settings, delete) if entries else 0
    print(f"purged {_count(removed, 'dead letter')}")
    if removed < len(entries):
        _note(f"{len(entries) - removed} were requeued or purged by someone else meanwhile")
    return EXIT_OK


# --- helpers --------------------------------------------------------------------------


def _with_redis(settings: Settings, action: Callable[[Redis, Keys], Awaitable[_T]]) -> _T:
    """Run `action(redis, keys)` on a fresh connection (one per step: a purge asks for
    confirmation between its read and its delete, outside any event loop)."""
    from orchestrator.connection import connect
    from orchestrator.keys import Keys

    async def run() -> _T:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-dlq"
        ) as redis:
            return await action(redis, Keys(settings.namespace))

    result: _T = run_async(run)
    return result


def _confirm(count: int) -> bool:
    """A yes on the terminal. Without one (a script, a pipe) nothing is purged unless
    --yes says so: deleting dead letters cannot be undone."""
    what = _count(count, "dead letter")
    if not sys.stdin.isatty():
        raise UserError(f"dlq purge: not purging {what} without --yes (stdin is not a terminal)")
    print(f"purge all {what}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def table(total: int, entries: Sequence[Entry], now: float) -> list[str]:
    """`dlq list`'s lines: a header with the count, then a row per record within WIDTH
    columns (only the error is cut: an id is shown whole so it can be pasted)."""
    if not total:
        return ["no dead letters"]
    header = f"{_count(total, 'dead letter')}, newest last"
    if len(entries) < total:
        header += f" (the newest {len(entries)} shown)"
    rows = [("JOB", "REASON", "WHEN", "ERROR")]
    rows += [
        (e.ref, e.record["reason"], _ago(e.record["at"], now), e.record["error"]) for e in entries
    ]
    id_width = max(len(row[0]) for row in rows)
    reason_width = max(len(row[1]) for row in rows)
    when_width = max(len(row[2]) for row in rows)
    error_width = max(WIDTH - id_width - reason_width - when_width - 6, MIN_ERROR)
    lines = [header]
    for ref, reason, when, error in rows:
        cut = _cut(" ".join(error.split()), error_width)
        line = f"{ref:<{id_width}}  {reason:<{reason_width}}  {when:<{when_width}}  {cut}"
        lines.append(line.rstrip())
    return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ago(at: float, now: float) -> str:
    """How long ago, in the largest whole unit: `3m ago`. Clocks of other hosts may run
    ahead of ours, so a time just in the future is `0s ago`."""
    if at <= 0:
        return "?"
    seconds = max(int(now - at), 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _when(at: float, now: float) -> str:
    if at <= 0:
        return "at an unknown time"
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{_ago(at, now)} ({stamp})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
