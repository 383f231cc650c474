"""How a running `orchestrator up` is found: a record and a lock in its data directory.

`up` holds an exclusive `flock` on `DATA_DIR/up.lock` for as long as it runs and writes
`DATA_DIR/stack.json` (its Redis URL, pids, start time). The lock, not the pids, says
whether the stack is alive: the kernel drops it when `up` dies however it dies, and a
recycled pid cannot fake it. Every other command resolves its Redis as

    --redis-url  >  REDIS_URL / ORCHESTRATOR_REDIS_URL  >  redis_url in the config file
                 >  a live `up` stack of this directory  >  the default

so a second shell finds the stack `up` started without being told where it is. The
record outlives the stack (a clean stop marks it stopped): a directory where `up` ran
then gets one line saying the stack is not running, never a quiet fallback to the
default URL, which may be another Redis altogether.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

import orjson

from orchestrator.connection import RedisSource
from orchestrator.errors import ServiceUnavailable, UserError
from orchestrator.settings import REDIS_URL_VARIABLES, Settings, redact_url

RECORD_FILE = "stack.json"
# Set by `orchestrator up` (and `demo`) beside the REDIS_URL of its embedded Redis that it
# gives its children: "<that URL> <where it came from>" (not ORCHESTRATOR_-prefixed:
# those are settings).
REDIS_ORIGIN_VARIABLE = "REDIS_URL_ORIGIN"
LOCK_FILE = "up.lock"


@dataclass(frozen=True)
class StackRecord:
    """What a running `up` tells the other commands about itself."""

    redis_url: str
    up_pid: int
    started_at: float
    data_dir: str
    redis_pid: int | None = None
    pids: dict[str, int] = field(default_factory=dict)
    stopped_at: float | None = None  # set by a clean stop; a crash leaves it unset

    def describe(self) -> str:
        said = f"`orchestrator up` pid {self.up_pid}, started {_when(self.started_at)}"
        return said + (f", stopped {_when(self.stopped_at)}" if self.stopped_at else "")


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


class StackRunning(UserError):
    """A second `up` on a data directory whose stack is alive."""


def record_path(data_dir: Path) -> Path:
    return data_dir / RECORD_FILE


def shown(path: Path) -> str:
    """A path as the user would type it from here (`./data/stack.json`)."""
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return str(path)
    return f"./{path}" if not str(path).startswith(("./", "../")) else str(path)


def read_record(data_dir: Path) -> StackRecord | None:
    """The record in `data_dir`, or None when there is none (or it cannot be read)."""
    try:
        raw = orjson.loads(record_path(data_dir).read_bytes())
        return StackRecord(**raw)
    except (OSError, ValueError, TypeError):
        return None


def is_live(data_dir: Path) -> bool:
    """True while some `up` holds the lock of `data_dir`."""
    try:
        handle = (data_dir / LOCK_FILE).open("rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class StackLock:
    """The exclusive lock a running `up` holds on its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse in one line naming the stack that holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.data_dir / LOCK_FILE).open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            record = read_record(self.data_dir)
            who = record.describe() + f", Redis at {redact_url(record.redis_url)}" if record else ""
            raise StackRunning(
                f"a stack is already running on {shown(self.data_dir)}"
                + (f" ({who})" if who else "")
                + "; stop it first (Ctrl-C in its terminal), or pass --data-dir DIR"
            ) from None
        self._handle = handle

    def write(self, record: StackRecord) -> None:
        """Publish the record atomically: a reader sees the old one or the new one."""
        path = record_path(self.data_dir)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_bytes(orjson.dumps(asdict(record), option=orjson.OPT_INDENT_2))
        os.replace(temporary, path)

    def release(self) -> None:
        """Stopped: the record stays, saying so. A command run here later must not fall
        back to the default Redis (perhaps somebody else's) as if no stack had been."""
        if (record := read_record(self.data_dir)) is not None:
            self.write(replace(record, stopped_at=time.time()))
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def origin_given(url: str, origin: str) -> dict[str, str]:
    """The variable that tells a child given REDIS_URL=`url` where that URL came from."""
    return {REDIS_ORIGIN_VARIABLE: f"{url} {origin}"}


def _origin_given(variable: str) -> str | None:
    """Where REDIS_URL came from, as the process that set it said, while it still holds
    the URL that process gave (a child may point REDIS_URL elsewhere)."""
    given, _, origin = os.environ.get(REDIS_ORIGIN_VARIABLE, "").partition(" ")
    if variable == "REDIS_URL" and origin and given == os.environ.get(variable):
        return origin
    return None


def resolve_redis(
    settings: Settings, *, flag: str | None, config_file: Path | None
) -> tuple[Settings, RedisSource]:
    """The settings with the Redis URL a command should use, and where it came from.

    A record of a stack that is no longer running is an error rather than a fallback:
    the user meant that stack, and the default URL may well be somebody else's Redis.
    """
    url = settings.redis_url
    if flag is not None:
        return settings, RedisSource(url, "--redis-url")
    for variable in REDIS_URL_VARIABLES:
        if os.environ.get(variable):
            return settings, RedisSource(url, _origin_given(variable) or variable)
    if "redis_url" in settings.model_fields_set:
        return settings, RedisSource(url, str(config_file or "orchestrator.toml"))
    data_dir = settings.data_dir
    record = read_record(data_dir)
    if record is not None:
        where = shown(record_path(data_dir))
        if not is_live(data_dir):
            raise ServiceUnavailable(
                f"the stack recorded in {where} is not running ({record.describe()}, "
                f"Redis at {redact_url(record.redis_url)}); start it again with "
                "`orchestrator up`, or set REDIS_URL to use another Redis"
            )
        resolved = settings.model_copy(update={"redis_url": record.redis_url})
        return resolved, RedisSource(record.redis_url, where, record.describe())
    return settings, RedisSource(url, "default")
