"""What `orchestrator status` knows about the service, as plain data (`snapshot` reads it).

`--json` fields (`SCHEMA` is bumped when one changes meaning or goes away):

- `schema`, `namespace`, `time` (Redis clock, unix seconds), `dead_letters` (count).
- `redis`: the Redis read and why that one: `url` (password redacted), `origin`
  (`--redis-url`, `REDIS_URL`, `ORCHESTRATOR_REDIS_URL`, a config file,
  `./data/stack.json`, `default`; in the processes `orchestrator up` or `demo` started
  on its embedded Redis, `orchestrator up, its embedded Redis`) and
  `detail` (e.g. the `orchestrator up` that recorded it); null when not known.
- `backlogs[]`: `name`, `depth` (jobs waiting, every priority level summed),
  `levels[]` (`level`, `depth`: the priority levels holding jobs, highest first, the
  order conductors take them in), `configured` (in settings, else only found in the
  set of backlogs dispatched to, or paused), `paused_at` (unix seconds it was paused:
  no conductor takes its jobs; null when not paused); configured ones first, in the
  order conductors consume them.
- `conductor`: `live[]` (`id`, `processing`: jobs taken and not yet forwarded),
  `processing` (their sum), `orphaned` (jobs held by conductors whose heartbeat
  lapsed: a live peer puts them back on ready), `ready`, `deferred` and `next_due_in`
  (seconds until the next deferred job is due, null when none).
- `no_worker`: task → `jobs` (waiting because no live worker runs that task) and
  `since` (unix seconds the oldest of them started waiting); oldest first.
- `pools[]`, in routing order: `name`, `order`, `queue` (arq queue key), `spill_after`,
  `max_in_flight`, `workers[]` (`id`, `host`, `pid`, `slots`, `running`, `version`,
  `heartbeat_age`; `launch`: the scaler launch it answers, null when no scaler launched
  it; `idle_since`: unix seconds it last became idle, null while it runs jobs;
  `draining`: it takes no new jobs and leaves once its running ones end), `slots` (sum
  over live workers), `running` (what its workers run: a start shows within half a
  second), `capacity` (slots within max_in_flight), `in_flight` (forwarded, not finished:
  `running` + `queued`), `queued` (forwarded, not started yet), `free` (capacity -
  in_flight, at least 0), `prefetch` (jobs the conductors may forward beyond `free`,
  to start as slots free: what the pool starts within `prefetch_seconds` at its
  `finish_rate`, jobs finished a second lately; both from its capacity counters),
  `waiting` (jobs pinned to this pool while it is full),
  `oldest_heartbeat_age` (seconds, null without workers), `paused_at` (unix seconds it
  was paused: no new jobs go there, running ones finish; null when not paused), `scaler`
  (null when the settings give the pool no scaler and none wrote its state).
- `pools[].scaler`: `configured` (the settings give the pool a scaler), `running` (a
  conductor's scaler keeps its state fresh; it lapses within a minute of the scaler
  stopping; when false, no worker is launched or released, and the fields only the
  scaler knows are null), `leader` (the conductor whose scaler decides), `demand`
  (jobs the pool would run now), `target` (workers it aims at), `workers`
  (`launching`: launched, no heartbeat yet; `active`: running jobs; `idle`;
  `draining`: released, finishing their jobs), `spend_today` (money spent on the
  pool's launched workers this UTC day, from the day's spend counter), `budget` (per
  UTC day; null: no cap), `budget_reached` (the scaler launches nothing more today and
  releases what it launched: the pool's jobs wait for the pools before it),
  `price_per_worker_hour`, `decision` (the last one: `event` — `scale_up`,
  `scale_down`, `launch_failed`, `budget_reached` or `hold` —, `reason`, and `at` in
  unix seconds; null when none).
- `rate_limits[]`: `name`, `rate` (tokens/s), `burst`, `tokens` (available now),
  `full_in` (seconds until the bucket is full again; beyond burst/rate it means
  deferred jobs have reserved tokens ahead).
- `batches[]`, newest first: `id`, `backlog`, `manifest`, `created_at`, `total`,
  `queued` (jobs put on the backlog), `dispatched` (dispatch finished), `receipts`
  (receipts written), then each job counted once, as `verify` counts it: `done`
  (succeeded), `failed` (failed for good, its dead letter purged), `dead_lettered`
  (has a dead letter: failed for good, or refused by the conductor with no receipt),
  `cancelled` (cancelled before or while it ran), `retrying` and `running` (both part
  of pending), `pending` (queued - done - failed - dead_lettered - cancelled: waiting
  or running); `settled`, `state` (`running`; once settled `succeeded`, `failed` when
  any job failed or was dead-lettered, else `cancelled` when any was cancelled),
  `cancelled_at` (unix seconds the batch was cancelled, null when it was not),
  `counts_exact`, `expires_at` (unix seconds after which a conductor archives the settled
  batch and removes it from Redis: `batch_retention`, or its `dispatch --keep`; null
  until a conductor found it settled) and `kept_forever` (its retention is `never`).
- `batches_total`: how many batches there are (`batches[]` holds the newest few, or
  one page of them).

Schema 2: `failed` no longer includes dead-lettered jobs (see `dead_lettered`).
Schema 3: `pending` no longer includes cancelled jobs (see `cancelled`), and `state`
may be `cancelled`.
Schema 4: `pools[].scaler` (elastic pools), and workers' `launch`, `idle_since` and
`draining`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

SCHEMA = 4
BatchState = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class RedisInfo:
    url: str
    origin: str
    detail: str


@dataclass(frozen=True, slots=True)
class Level:
    level: int
    depth: int


@dataclass(frozen=True, slots=True)
class Backlog:
    name: str
    depth: int
    configured: bool
    levels: list[Level]
    paused_at: float | None


@dataclass(frozen=True, slots=True)
class LiveConductor:
    id: str
    processing: int


@dataclass(frozen=True, slots=True)
class ConductorSide:
    live: list[LiveConductor]
    processing: int
    orphaned: int
    ready: int
    deferred: int
    next_due_in: float | None


@dataclass(frozen=True, slots=True)
class NoWorker:
    jobs: int
    since: float


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    id: str
    host: str
    pid: int
    slots: int
    running: int
    version: str
    heartbeat_age: float
    launch: str | None
    idle_since: float | None
    draining: bool


@dataclass(frozen=True, slots=True)
class ScalerWorkers:
    launching: int
    active: int
    idle: int
    draining: int


@dataclass(frozen=True, slots=True)
class Decision:
    event: str
    reason: str
    at: float | None


@dataclass(frozen=True, slots=True)
class Scaler:
    configured: bool
    running: bool
    leader: str | None
    demand: int | None
    target: int | None
    workers: ScalerWorkers | None
    spend_today: float
    budget: float | None
    budget_reached: bool
    price_per_worker_hour: float | None
    decision: Decision | None


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    order: int
    queue: str
    spill_after: float
    max_in_flight: int | None
    workers: list[WorkerBeat]
    slots: int
    running: int
    capacity: int
    in_flight: int
    queued: int
    free: int
    prefetch: int
    finish_rate: float
    waiting: int
    oldest_heartbeat_age: float | None
    paused_at: float | None
    scaler: Scaler | None


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    rate: float
    burst: int
    tokens: float
    full_in: float


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    backlog: str
    manifest: str
    created_at: float
    total: int
    queued: int
    dispatched: bool
    receipts: int
    done: int
    failed: int
    dead_lettered: int
    cancelled: int
    retrying: int
    running: int
    pending: int
    settled: bool
    state: BatchState
    cancelled_at: float | None
    counts_exact: bool
    # Once settled: when the pruner archives it and removes it from Redis (null: not
    # settled yet, or `kept_forever`: dispatched with `--keep never`, or retention never).
    expires_at: float | None = None
    kept_forever: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    schema: int
    namespace: str
    time: float
    redis: RedisInfo | None
    backlogs: list[Backlog]
    conductor: ConductorSide
    no_worker: dict[str, NoWorker]
    pools: list[Pool]
    rate_limits: list[Bucket]
    batches: list[Batch]
    batches_total: int
    dead_letters: int


def document(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as `status --json` and the dashboard's `/api/status` give it, with the
    spillover in words (`status.verdict`) that the CLI and the banner both say."""
    from orchestrator.status.verdict import verdict  # it reads this module's Pool

    said = verdict(snapshot.pools)
    return {**asdict(snapshot), "spillover": {"kind": said.kind, "text": said.text}}


def to_json(snapshot: Snapshot) -> bytes:
    return orjson.dumps(document(snapshot), option=orjson.OPT_INDENT_2)
