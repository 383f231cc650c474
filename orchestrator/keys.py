"""Every Redis key name the project uses is built here, and nowhere else.

All keys share one hash tag (`{namespace}`) so that the multi-key Lua scripts keep
working on Redis Cluster, where every key a script touches must live in one slot. The
namespace is a setting, which also lets tests and several deployments share a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKLOG_PREFIX = "backlog:"
_BACKLOG_NAME = re.compile(r"^backlog:[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}\Z")
# What a batch may be called (`dispatch --batch`, a manifest's stem, `meta.batch`); `@`
# joins a schedule's name and its tick (`nightly-gap-fill@2026-12-06T01:00Z`).
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,149}\Z")


def backlog_name(raw: str) -> str:
    """Normalise what a user typed (`stress` or `backlog:stress`) to `backlog:stress`.

    Raises ValueError with a sentence fit for the user when the name cannot be a key.
    """
    if raw[: len(BACKLOG_PREFIX)].lower() == BACKLOG_PREFIX and not raw.startswith(BACKLOG_PREFIX):
        # `Backlog:Stress` would become `backlog:Backlog:Stress`, a backlog of its own
        raise ValueError(
            f"invalid backlog name {raw!r}: the prefix is lowercase "
            f"(backlog:{raw[len(BACKLOG_PREFIX) :]})"
        )
    name = raw if raw.startswith(BACKLOG_PREFIX) else BACKLOG_PREFIX + raw
    if not _BACKLOG_NAME.match(name):
        raise ValueError(
            f"invalid backlog name {raw!r}: use letters, digits and _ . : - "
            "(e.g. backlog:stress), at most 100 characters"
        )
    return name


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "orc"

    @property
    def _root(self) -> str:
        return "{" + self.namespace + "}"

    def backlog(self, name: str) -> str:
        """The list a backlog's jobs wait in; `name` is already normalised."""
        return f"{self._root}:{name}"

    def backlog_level(self, name: str, level: int) -> str:
        """The list of a backlog's jobs of priority `level`; level 0 is the backlog's own
        list (where producers push), any other is `…:backlog:<name>#<level>` (`#` cannot
        occur in a backlog name, so no backlog's list is another's level)."""
        base = self.backlog(name)
        return base if level == 0 else f"{base}#{level}"

    def backlog_levels(self, name: str) -> str:
        """Sorted set of the non-zero priority levels a backlog has jobs on (member and
        score: the level), so intake drains them highest first without scanning."""
        return f"{self._root}:levels:{name}"

    @property
    def backlogs(self) -> str:
        """Set of every backlog name ever dispatched to, so consumers can find them."""
        return f"{self._root}:backlogs"

    def batch(self, batch_id: str) -> str:
        """Hash describing one dispatched manifest (path, digest, backlog, counts); its
        `queued` count is the cursor that makes dispatch idempotent."""
        return f"{self._root}:batch:{batch_id}"

    def cancelled(self, batch_id: str) -> str:
        """Hash of job id → envelope of a batch's cancelled jobs: a job listed here is not
        started, wherever it is found, and `retry --cancelled` puts the envelopes back in
        line. A whole batch is cancelled by the `cancelled_at` field of its `batch` hash."""
        return f"{self._root}:cancelled:{batch_id}"

    @property
    def stop_running(self) -> str:
        """Hash of what `cancel --running` stops while it runs: a batch id, or `<batch>
        <job id>`, → the time asked. Workers check their running jobs against it."""
        return f"{self._root}:stop_running"

    @property
    def cancels(self) -> str:
        """Pub/sub channel on which `cancel --running` tells workers to look at once."""
        return f"{self._root}:cancels"

    @property
    def paused_backlogs(self) -> str:
        """Hash of paused backlog name → the time it was paused: no conductor takes from it."""
        return f"{self._root}:paused:backlogs"

    @property
    def paused_pools(self) -> str:
        """Hash of paused pool name → the time it was paused: no job is forwarded to it."""
        return f"{self._root}:paused:pools"

    def staging(self, batch_id: str, token: str) -> str:
        """List one dispatch fills while it validates, before anything reaches a backlog."""
        return f"{self._root}:staging:{batch_id}:{token}"

    def batch_ids(self, batch_id: str) -> str:
        """Set of the job ids of an ad-hoc batch (bare lines producers pushed): its
        members, and how a line sent twice under one id runs once."""
        return f"{self._root}:batch_ids:{batch_id}"

    @property
    def batches(self) -> str:
        """Sorted set of batch ids scored by first dispatch time."""
        return f"{self._root}:batches"

    @property
    def root(self) -> str:
        """The hash-tagged prefix, for Lua scripts that derive per-pool keys from it
        (the same names as the methods below build; they all share one slot)."""
        return self._root

    def pool_queue(self, pool: str) -> str:
        """The arq queue (a sorted set) a pool's workers consume."""
        return f"{self._root}:queue:{pool}"

    def arq_job_id(self, job_id: str) -> str:
        """The id of a job in arq. arq's own keys (`arq:job:<id>`) are not namespaced, so
        the id carries the namespace, hash tag included, to land in the same slot."""
        return f"{self._root}:{job_id}"

    # --- the conductor ---------------------------------------------------------------

    def processing(self, conductor_id: str) -> str:
        """List of jobs one conductor has taken and not yet forwarded (reliable queue)."""
        return f"{self._root}:processing:{conductor_id}"

    def conductor(self, conductor_id: str) -> str:
        """A conductor's heartbeat; when it expires, its processing list is recovered."""
        return f"{self._root}:conductor:{conductor_id}"

    @property
    def conductors(self) -> str:
        return f"{self._root}:conductors"

    @property
    def ready(self) -> str:
        """Jobs taken before and due again (recovered, released from deferral): served first."""
        return f"{self._root}:ready"

    @property
    def doorbell(self) -> str:
        """List the conductors block on (`BLPOP`) for new work: whatever puts a job where
        a conductor takes it (dispatch, requeue, retry, take-back, recovery, resume) rings
        it in the same atomic step, `LPUSH` + `LTRIM` to one element. A ring carries no
        job — the job is in its list already — so a lost ring delays a job by at most
        `idle_block`, never loses it."""
        return f"{self._root}:doorbell"

    def no_worker(self, task: str) -> str:
        """Jobs of `task` that no live worker of any pool they may use can run: they wait
        here, in order, until a worker announces the task in its heartbeat."""
        return f"{self._root}:no_worker:{task}"

    @property
    def no_worker_tasks(self) -> str:
        """Sorted set of the tasks with jobs in a `no_worker` list, scored by the time
        (ms) the oldest of them started waiting."""
        return f"{self._root}:no_worker_tasks"

    def waiting(self, pool: str) -> str:
        """Jobs that may only run on `pool` (a rule or a pin) while it is full."""
        return f"{self._root}:waiting:{pool}"

    @property
    def deferred(self) -> str:
        """Sorted set of envelopes scored by the unix time (ms) they are due again."""
        return f"{self._root}:deferred"

    @property
    def dead(self) -> str:
        """Dead-letter list: JSON records of jobs that will not be run again by themselves."""
        return f"{self._root}:dead"

    def bucket(self, name: str) -> str:
        """A rate limit's GCRA state (its theoretical arrival time)."""
        return f"{self._root}:bucket:{name}"

    @property
    def events(self) -> str:
        """Pub/sub channel on which workers announce freed slots."""
        return f"{self._root}:events"

    # --- the pools -------------------------------------------------------------------

    def inflight(self, pool: str) -> str:
        """Sorted set of job ids forwarded to `pool` and not finished, scored by time."""
        return f"{self._root}:inflight:{pool}"

    def pool_wake(self, pool: str) -> str:
        """Pub/sub channel on which the conductor tells a pool's workers that jobs wait."""
        return f"{self._root}:wake:{pool}"

    def workers(self, pool: str) -> str:
        """Set of the worker ids that have announced themselves in `pool`."""
        return f"{self._root}:workers:{pool}"

    def worker(self, pool: str, worker_id: str) -> str:
        """A worker's heartbeat hash (slots, running, host, pid, …), with a TTL."""
        return f"{self._root}:worker:{pool}:{worker_id}"

    def capacity(self, pool: str) -> str:
        """Hash of the pool's capacity as counters, so that a round reads it in one call
        whatever the fleet's size: `slots` and `workers` (live), `tasks:<list>` → how many
        live workers announce exactly that task list (`tasks:*`: a worker too old to
        announce), `finished` (jobs the pool ever finished), the completion `rate` the
        conductors measure from it, `prefetch` (jobs the pool may hold beyond its slots)
        and the workers' `prefetch_ms`. Kept by `lua/lib/pools.lua`."""
        return f"{self._root}:capacity:{pool}"

    def counted(self, pool: str) -> str:
        """Hash of worker id → what the pool's capacity counts of it (`<slots>|<tasks>`):
        the ledger that lets a heartbeat, a clean exit or an expiry change the counters by
        exactly that worker's share."""
        return f"{self._root}:counted:{pool}"

    def deadlines(self, pool: str) -> str:
        """Sorted set of the counted workers of `pool`, scored by the time (ms, Redis's
        clock) their heartbeat lapses unless renewed: the ones the counters must forget."""
        return f"{self._root}:deadlines:{pool}"

    def release(self, pool: str) -> str:
        """Set of the worker ids of `pool` the scaler asked to drain and leave: a worker
        that finds itself here stops as on SIGTERM (whatever started it, on any host)."""
        return f"{self._root}:release:{pool}"

    # --- the scaler (elastic pools) --------------------------------------------------

    @property
    def scaler_lease(self) -> str:
        """Which conductor's scaler decides (its id), with a TTL it renews while alive."""
        return f"{self._root}:scaler:lease"

    def launches(self, pool: str) -> str:
        """Hash of launch id → JSON record of one worker launch (`scaling.launches.Launch`): when,
        its state (launching, active, draining, gone, failed), its worker once it beat."""
        return f"{self._root}:launches:{pool}"

    def spend(self, pool: str, day: str) -> str:
        """Money spent on `pool`'s launched workers on UTC `day` (YYYY-MM-DD), a float."""
        return f"{self._root}:spend:{pool}:{day}"

    def scaler_state(self, pool: str) -> str:
        """Hash of the scaler's last view of `pool`: demand, target, workers by state,
        budget, and the last decision with its reason — what `status` shows."""
        return f"{self._root}:scaler:{pool}"

    def holding(self, worker_id: str) -> str:
        """Hash of the arq job ids a worker is running (→ pool), so that a peer can free
        them for another worker at once when this one dies."""
        return f"{self._root}:holding:{worker_id}"

    @property
    def holders(self) -> str:
        """Hash of worker id → pool, for every worker that may hold jobs."""
        return f"{self._root}:holders"

    def running(self, batch_id: str) -> str:
        """Hash of job id → who runs it and since when, for a batch's jobs running now:
        written as a run begins (`lua/begin.lua`), deleted with the run's receipt."""
        return f"{self._root}:running:{batch_id}"

    def attempts(self, batch_id: str, job_id: str) -> str:
        """List of the receipts of a job's runs that a retry followed (oldest first, the
        last few, expiring): the job page's earlier runs, which the receipt of the next
        run replaces in `receipts`. Only jobs that were retried have one."""
        return f"{self._root}:attempts:{batch_id}:{job_id}"

    def receipts(self, batch_id: str) -> str:
        """Hash of job id → receipt (JSON) for one batch."""
        return f"{self._root}:receipts:{batch_id}"

    # --- history (the dashboard's charts) --------------------------------------------

    def history(self, bucket: int) -> str:
        """Hash of what happened in one interval (`bucket`: unix time // its length):
        jobs finished per pool and outcome, backlog depths, cloud spend. It expires a
        day after its interval ends (`history.py`), so the history holds a day at most."""
        return f"{self._root}:history:{bucket}"

    # --- retention (settled batches archived, then removed) ----------------------------

    @property
    def retention_lease(self) -> str:
        """Which conductor prunes (its id), with a TTL it renews while alive: one pruner
        for the whole service, whatever the number of conductors."""
        return f"{self._root}:retention:lease"

    @property
    def pruning(self) -> str:
        """Set of the batches whose keys were taken out of sight (`trash`) and are being
        deleted in bounded steps: a pruner that died midway is finished by the next."""
        return f"{self._root}:pruning"

    def trash(self, batch_id: str, part: str) -> str:
        """Where a pruned batch's key `part` (receipts, batch, cancelled, batch_ids,
        running) waits to be deleted in bounded steps, out of every reader's sight."""
        return f"{self._root}:trash:{batch_id}:{part}"

    # --- batches that wait for batches (dispatch --after) -----------------------------

    def held(self, batch_id: str, level: int = 0) -> str:
        """List of a held batch's jobs of priority `level`, waiting for the batches it
        names in `after` to settle; moved onto its backlog's lists on release
        (`lua/release_after.lua` builds these names from `root` as here)."""
        base = f"{self._root}:held:{batch_id}"
        return base if level == 0 else f"{base}#{level}"

    def held_levels(self, batch_id: str) -> str:
        """Sorted set of the non-zero priority levels a held batch has jobs on."""
        return f"{self._root}:held_levels:{batch_id}"

    @property
    def held_batches(self) -> str:
        """Set of the batches held until others settle: what the conductors look at."""
        return f"{self._root}:held_batches"

    # --- schedules -------------------------------------------------------------------

    def schedule(self, name: str) -> str:
        """Hash of what a schedule did: its last tick (claimed by one conductor), last
        batch, last outcome and when; see orchestrator/schedules/state.py."""
        return f"{self._root}:schedule:{name}"

    def schedule_turns(self, name: str) -> str:
        """Sorted set of the schedule's ticks claimed and not yet fired to an end (member
        and score: the tick): they fire one at a time, in tick order, so each sees the
        last one's batch when it applies its overlap."""
        return f"{self._root}:schedule_turns:{name}"

    @property
    def paused_schedules(self) -> str:
        """Hash of paused schedule name → the time it was paused: its ticks pass unfired."""
        return f"{self._root}:paused:schedules"
