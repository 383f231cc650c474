"""The one settings object: defaults < `orchestrator.toml` < environment < CLI flags.

Environment variables carry the `ORCHESTRATOR_` prefix (nested fields use `__`, lists
and tables are JSON; `backlogs` may also be comma-separated), except `REDIS_URL`,
honoured as the de-facto standard name.

The settings of one pool, its scaler, routing rules and rate limits are `pools.py`'s;
this module is the one schema they sit in: its fields, their validators and the sources
they load from.
"""

from __future__ import annotations

import codecs
import difflib
import json
import os
import re
import tomllib
from importlib.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchestrator import topology
from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.keys import backlog_name
from orchestrator.pools import Executor as Executor  # re-exported: they were defined here
from orchestrator.pools import PoolSettings as PoolSettings
from orchestrator.pools import RateLimit as RateLimit
from orchestrator.pools import RoutingRule as RoutingRule
from orchestrator.pools import ScalerSettings as ScalerSettings
from orchestrator.schedule import ScheduleSettings, check_schedules, describe_schedule_error

ENV_PREFIX = "ORCHESTRATOR_"
CONFIG_ENV = "ORCHESTRATOR_CONFIG"
DEFAULT_CONFIG_FILE = "orchestrator.toml"
_REDIS_SCHEMES = (
    "redis", "rediss", "unix",
    "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster",
)  # fmt: skip
# The variables that set redis_url, the first one set winning.
REDIS_URL_VARIABLES = ("ORCHESTRATOR_REDIS_URL", "REDIS_URL")
_BUCKET_NAME = re.compile(r"^[^\s;,]{1,200}\Z")
_BACKLOGS_EXAMPLE = (
    'e.g. ORCHESTRATOR_BACKLOGS=backlog:a,backlog:b, or backlogs = ["backlog:a"] in TOML'
)
# Seconds, written as `30d`, `12h`, `5s` or `never` (infinity); see `durations`.
Duration = Annotated[float, BeforeValidator(parse_duration)]
_TOML_PLACE = re.compile(r"^(?P<reason>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


def _default_pools() -> list[PoolSettings]:
    return [PoolSettings(name="metal", order=0), PoolSettings(name="cloud", order=1)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        toml_file=DEFAULT_CONFIG_FILE,
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices(*REDIS_URL_VARIABLES, "redis_url"),
    )
    namespace: str = Field(default="orc", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    # NoDecode: the environment may give a comma-separated list, not only JSON.
    backlogs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["backlog:default"], min_length=1
    )
    pools: list[PoolSettings] = Field(default_factory=_default_pools, min_length=1)
    rules: list[RoutingRule] = Field(default_factory=list)
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    heartbeat_interval: PositiveFloat = 5.0
    # Where task code is looked up (the allow-list); tests and plugins may add packages.
    task_packages: list[str] = Field(default_factory=lambda: ["workers.tasks"], min_length=1)
    max_tries: PositiveInt = 3  # runs of a job before it is dead-lettered
    retry_delay: float = Field(default=1.0, ge=0)  # seconds, times the attempt number
    # Longest a job may run; also how long a dead worker's job stays claimed before
    # another worker may run it (arq's in-progress timeout is this plus 10 s).
    job_timeout: PositiveFloat = 600.0
    # Where sync (plain `def`) tasks run. "process": child processes, one per slot,
    # reused from job to job as Celery's prefork pool: CPU-bound code uses every core,
    # and a crash, a leak or a job stopped by cancel or timeout stays in its child.
    # "thread": threads of the worker: cheap, for I/O-bound code (the GIL keeps
    # CPU-bound code on one core), and a running job cannot be stopped. A pool may
    # choose its own (`[[pools]] executor`); `worker --executor` overrides both.
    executor: Executor = "process"
    # Jobs a child process runs before it is replaced with a fresh one (0: never): the
    # cure for a task that leaks memory, as Celery's worker_max_tasks_per_child.
    max_jobs_per_child: int = Field(default=0, ge=0)
    grace_period: float = Field(default=30.0, ge=0)  # SIGTERM: let running jobs finish
    intake_batch: PositiveInt = 200  # jobs a conductor takes and routes per round trip
    # Seconds of work a pool may hold queued beyond its free slots, so that a slot that
    # frees starts its next job at once instead of after a conductor round trip: a pool
    # gets as many extra jobs as its busy slots finish in this time (its slots over its
    # jobs' measured mean length, rounded, at most its slots). A pool of long jobs
    # finishes too few for one, so such a job is never queued behind a busy slot while a
    # later pool has a free one.
    # 0 turns prefetch off. Announced by the pool's workers with their heartbeats.
    prefetch_seconds: float = Field(default=0.1, ge=0, le=60)
    # Seconds an idle conductor sleeps before it looks at every list again anyway. Work
    # queued through this project rings the doorbell and is taken at once; this bounds
    # the wait of a job pushed without a ring (a producer's bare RPUSH, a lost ring).
    idle_block: PositiveFloat = 5.0
    manifests_dir: Path = Path("manifests")
    # `orchestrator up` keeps its Redis data and its stack record here; the other
    # commands look here for a running stack, and workflows for their data files.
    data_dir: Path = Path("data")
    max_line_bytes: PositiveInt = 1_048_576
    crud_database: Path = Path("data/crud.db")
    # /healthz and /metrics of conductors and workers; off unless set (containers set it).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # `orchestrator web`: the token its actions (cancel, pause, requeue…) need. Unset, a
    # dashboard on loopback makes one up and prints it in its URL; one bound to any
    # other address refuses to start without it.
    web_token: SecretStr | None = None
    # A Redis that may evict keys (any maxmemory-policy but noeviction) drops queued
    # jobs and receipts without a word: the conductor refuses it, unless this is true.
    allow_evicting_redis: bool = False
    # How long a settled batch (every job succeeded, failed for good or cancelled) keeps
    # its receipts, record and counters in Redis before the conductors archive it into
    # archive_dir and remove it; `dispatch --keep` sets it for one batch. "never": kept.
    batch_retention: Duration = 7 * 86400.0
    # How long a dead letter stays on the list unhandled before it is archived and
    # removed, and how many the list holds at most (the oldest archived first).
    dead_letter_retention: Duration = 30 * 86400.0
    dead_letter_cap: PositiveInt = 100_000
    # Where pruned batches and dead letters are archived, one gzip JSONL file a batch
    # (default: <data_dir>/archive).
    archive_dir: Path | None = None
    prune_interval: PositiveFloat = 60.0  # seconds between the conductors' looks
    # Workflows that plan and dispatch themselves on time (orchestrator/schedules).
    schedules: list[ScheduleSettings] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not one of {', '.join(s + '://' for s in _REDIS_SCHEMES)} "
                f"(got {redact_url(url)})"
            )
        try:
            topology.parse(url)
        except ValueError as exc:
            # the parser's words may quote the URL's parts, a password among them
            said = str(exc)
            credentials = url.partition("://")[2].partition("?")[0].rpartition("@")[0]
            secret = credentials.partition(":")[2]
            if secret and secret in said:
                said = said.replace(secret, "***")
            raise ValueError(f"{said} (got {redact_url(url)})") from None
        return url

    @field_validator("backlogs", mode="before")
    @classmethod
    def _backlog_list(cls, value: Any) -> Any:
        """`backlog:a,backlog:b` or a JSON list from the environment; a list from TOML."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError(
                        f"{text!r} is not a JSON list of names; {_BACKLOGS_EXAMPLE}"
                    ) from None
            else:
                value = [name.strip() for name in text.split(",") if name.strip()]
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise ValueError(f"expected a list of backlog names; {_BACKLOGS_EXAMPLE}")
        if not value:
            raise ValueError(f"name at least one backlog; {_BACKLOGS_EXAMPLE}")
        return value

    @field_validator("backlogs")
    @classmethod
    def _backlog_names(cls, names: list[str]) -> list[str]:
        normalised = [backlog_name(n) for n in names]
        if len(set(normalised)) != len(normalised):
            raise ValueError("a backlog is listed twice")
        return normalised

    @field_validator("rate_limits")
    @classmethod
    def _bucket_names(cls, limits: dict[str, RateLimit]) -> dict[str, RateLimit]:
        for name in limits:
            if not _BUCKET_NAME.match(name):
                raise ValueError(f"rate limit name {name!r} may not hold spaces, ';' or ','")
        return limits

    @field_validator("schedules")
    @classmethod
    def _schedules_consistent(cls, schedules: list[ScheduleSettings]) -> list[ScheduleSettings]:
        """Checked as the settings load, so a conductor never starts with a schedule that
        cannot fire (orchestrator/schedule.py)."""
        return check_schedules(schedules)

    @model_validator(mode="after")
    def _pools_consistent(self) -> Settings:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        orders = [p.order for p in self.pools]
        if len(set(orders)) != len(orders):
            raise ValueError(f"pool orders must be unique, got {orders}")
        for rule in self.rules:
            if rule.pool not in names:
                raise ValueError(f"rule for {rule.task!r} names unknown pool {rule.pool!r}")
        return self

    @property
    def archive_path(self) -> Path:
        """Where archives are written and read: `archive_dir`, else inside `data_dir`."""
        return self.archive_dir if self.archive_dir is not None else self.data_dir / "archive"

    @property
    def ordered_pools(self) -> list[PoolSettings]:
        return sorted(self.pools, key=lambda p: p.order)

    def executor_of(self, pool: str) -> Executor:
        """The executor of `pool`'s workers: the pool's own, else the default."""
        chosen = next((p.executor for p in self.pools if p.name == pool), None)
        return chosen or self.executor

    @property
    def pool_names(self) -> list[str]:
        """The pools' names in routing order: what a `meta.pool` may name."""
        return [pool.name for pool in self.ordered_pools]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(TomlConfigSettingsSource):
    """The TOML file, its syntax errors one line naming the file and line (tomllib's
    own message names neither the file nor, in a form editors jump to, the line), and
    a UTF-8 byte order mark (as Windows editors write) accepted."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        with file_path.open(mode="rb") as file:
            data = file.read().removeprefix(codecs.BOM_UTF8)
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            at = data[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{file_path}:{at}: invalid TOML: not UTF-8 text") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            place = _TOML_PLACE.match(str(exc))
            if place is not None:
                line, reason = place["line"], f"{place['reason']} (column {place['column']})"
            else:  # "(at end of document)": the last line that holds anything
                line = str(max(1, len(text.rstrip().splitlines())))
                reason = str(exc).replace("(at end of document)", "(at the end of the file)")
            raise ConfigError(f"{file_path}:{line}: invalid TOML: {reason}") from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning any validation problem into one `ConfigError` line.

    `config_file` (or `$ORCHESTRATOR_CONFIG`) must exist when given; the default
    `orchestrator.toml` in the working directory is read only if present.
    """
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    cls: type[Settings] = Settings
    if path is not None:
        # The TOML path is class configuration in pydantic-settings; a subclass is
        # the supported way to point it elsewhere at run time.
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})
        cls = type("Settings", (Settings,), {"model_config": config})
    source = str(path or DEFAULT_CONFIG_FILE)
    if unknown := _unknown_variables():
        suggestions = difflib.get_close_matches(
            unknown[0], [ENV_PREFIX + name.upper() for name in Settings.model_fields], n=1
        )
        hint = f"; did you mean {suggestions[0]}?" if suggestions else ""
        raise ConfigError(f"{unknown[0]} is not a setting{hint}")
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except ValueError as exc:  # a malformed TOML file or JSON environment value
        raise ConfigError(f"invalid configuration: {exc}") from None


def redact_url(url: str) -> str:
    """The URL with its passwords replaced, fit for logs and error messages (one host
    or several, as Sentinel and Cluster URLs name; a password in the query too, and a
    password holding `/` or `@`). Errs on the side of hiding."""
    scheme, sep, rest = url.partition("://")
    before_query, mark, query = rest.partition("?")
    credentials, at, after = before_query.rpartition("@")
    if at and ":" in credentials:
        before_query = credentials.split(":", 1)[0] + ":***@" + after
    query = re.sub(r"((?:^|&)[a-z_]*password=)[^&]*", r"\1***", query)
    return f"{scheme}{sep}{before_query}{mark}{query}"


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        if (said := describe_schedule_error(error, source)) is not None:
            return said  # one line naming the file, the line and the setting
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] in _ALIASES:
            loc[0] = _ALIASES[loc[0]]
        field = ".".join(loc) or "settings"
        variable = _ENV_NAMES.get(loc[0], ENV_PREFIX + loc[0].upper()) if loc else ENV_PREFIX + "*"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{field}: {message} (from {variable} or {source})")
    return "invalid configuration: " + "; ".join(problems)


def _unknown_variables() -> list[str]:
    """`ORCHESTRATOR_*` variables that set nothing: almost always a typo worth an error."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | _OTHER_VARIABLES
    return sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX) and name.split("__", 1)[0] not in known
    )


_ALIASES = dict.fromkeys(REDIS_URL_VARIABLES, "redis_url")
_ENV_NAMES = {"redis_url": " or ".join(reversed(REDIS_URL_VARIABLES))}
# Read by other parts of the program, not by Settings.
_OTHER_VARIABLES = {CONFIG_ENV, "ORCHESTRATOR_REDIS_SERVER"}
