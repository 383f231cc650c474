"""The one place that hooks arq's private worker API: `WakeableWorker`.

arq polls a queue on a fixed period; the conductor only forwards as many jobs as a
pool has free slots, so a worker would sit idle for up to a period after every job.
Here the pause after each poll ends early on the pool's wake channel. And a job
claimed by a process that then dies stays claimed for arq's job timeout unless someone
knows who held it: the worker records that in the same step as the claim.

arq has no public hook for either, so this module overrides arq internals — and is the
only module that does (`tests/worker/test_arq_contract.py` checks each one against the
installed arq):

- `Worker._poll_iteration(self)`: one poll of the queue (read due ids, start them,
  reap finished tasks). Wrapped to clear the wake event before and, when the poll read
  fewer ids than `queue_read_limit` (the queue is drained of due jobs), to wait for a
  wake-up, the instant the next job forwarded ahead of time is due (`PoolWake`), or
  `POLL_DELAY` after; the worker is built with `poll_delay≈0` so arq's own sleep is
  not the pause.
- `Worker.start_jobs(self, job_ids: list[bytes])`: called by `_poll_iteration` with the
  ids it read; it claims each (arq's in-progress key, under WATCH/MULTI: four round
  trips a job) and starts `run_job(job_id, score)` in a task. Replaced: the ids it may
  start are claimed together by `lua/start_jobs.lua`, which makes arq's checks
  atomically and records `job_id → pool` in the worker's holding hash in the same step,
  so that the conductor's reaper (`lua/release_dead_workers.lua`) can drop the claims of
  a worker that died, and begins each job that was not cancelled (its record in
  `running:<batch>`; the runner then skips `begin.lua`); a job that ran before without
  finishing (a possible poison pill) is claimed only by an idle worker and run alone.
  Slots are taken exactly as arq takes them: its semaphore `sem` and counter
  `job_counter` (given back by `_release_sem_dec_counter_on_complete` when a job's end
  begins, in `finish_job`, or when its task ends without one), `max_jobs`, its `tasks`,
  `in_progress_timeout_s` and the `loop` it starts tasks on. Ids read and left for want
  of a slot (a pool's prefetch) are claimed the moment a slot is given back, without
  reading the queue again: the next job starts while the last one's end is written.
  `lua/lib/queued.lua` (take-back) relies on a claim being atomic with its own check,
  as it is.
- `Worker.run_job(self, job_id, score)`: wrapped: the transaction it begins with (the
  payload, the try counter) was done by the claim, which answers it (`claimed_reads`).
- `Worker.finish_job(self, job_id, finish, result_data, result_timeout_s,
  keep_result_forever, incr_score, keep_in_progress)`: arq's end of a run, one MULTI
  (claim dropped; when `finish`, the result kept and the job deleted and taken out of
  the queue; when `incr_score`, pushed back for its retry). Replaced by a copy of arq
  0.28's that also runs the commands the job's runner staged for its end (its receipt,
  slot, dead letter, wake-up: `receipts.stage`) under the job's id in `outcomes`: one
  round trip where there were two, and no moment when the receipt is written while arq
  still has the job, or the reverse; the MULTI so staged is sent as one script call
  (`one_call`). The contract test pins the source it copies (the copies are in
  `worker/arq_ends.py`).
- `Worker.finish_failed_job(self, job_id, result_data)`: arq's end of a job it could not
  run (its payload gone or unreadable), one MULTI. Replaced by a copy of arq 0.28's.
  Both copies leave out arq's `ZREM arq:abort <id>` (`worker/arq_ends.py` says why).
- The attributes these read: `Worker.pool` (the `ArqRedis`), `Worker.queue_read_limit`,
  `Worker.allow_pick_jobs` (false once a stop began: nothing more is claimed).

Everything else the worker uses (`Worker(...)` keyword arguments, `async_run`,
`handle_sig`, `handle_sig_wait_for_completion`, `tasks`, `health_check_key`, `Retry`,
`func`) is arq's public surface; the job format and key names are `arq_jobs`'. Not
`close()`: it waits for the jobs without a bound (`worker/process.py` ends them itself).

pyproject pins `arq>=0.26,<0.29` for these hooks: private methods may change in any
release, so a new arq is let in only after `test_arq_contract.py` passes against it
(and the worker's integration tests with it), then the pin is raised.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from functools import partial
from typing import Any

from arq.worker import Worker
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from orchestrator import arq_jobs, one_call
from orchestrator.keys import Keys
from orchestrator.scripts import script
from orchestrator.worker import arq_ends
from orchestrator.worker.arq_ends import Outcome
from orchestrator.worker.claimed_reads import Read, answer_first_read
from orchestrator.worker.full_redis import while_full
from orchestrator.worker.pool_wake import PoolWake

# Longest pause between two polls of the pool's queue when no wake-up comes (arq's
# default period is 0.5 s); a forward wakes the worker at once.
POLL_DELAY = 0.5
# arq's own pause between polls, made negligible: the real pause is WakeableWorker's.
ARQ_POLL_DELAY = 0.001
# Seconds a job's end waits for the claim of the job that takes its slot (see finish_job).
CLAIM_FIRST = 0.05


class WakeableWorker(Worker):
    """An arq worker that polls its queue as soon as the conductor forwards a job, and
    claims the jobs it read in one step that also says it holds them (hash `holding`)."""

    def __init__(
        self,
        wake: PoolWake,
        pool: str,
        *args: Any,
        keys: Keys,
        worker_id: str,
        outcomes: dict[str, Outcome] | None = None,
        begun: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._outcomes: dict[str, Outcome] = {} if outcomes is None else outcomes
        # The jobs whose claim also began them (lua/start_jobs.lua): their runner skips
        # begin.lua. Keyed by arq id, taken out when the job's task ends.
        self._begun: set[str] = set() if begun is None else begun
        self._keys = keys
        self._worker_id = worker_id
        self._wake = wake
        wake.can_wait = self._forward_can_wait
        self._holding = keys.holding(worker_id)
        self._pool_name = pool
        self._read = 0
        self._full = False  # the last poll left jobs (or read none) for want of a slot
        self._claim: AsyncScript | None = None
        self._end: AsyncScript | None = None  # a job's end as one call (`one_call`)
        self._reads: dict[str, Read] = {}  # each claimed job's first read, until it runs
        self._alone: asyncio.Task[None] | None = None  # a suspect: nothing starts beside it
        # Runs whose slot was given back when their end began (`finish_job`), not when
        # their task ended.
        self._given_back: set[asyncio.Task[None]] = set()
        # What the last start left for want of a slot: claimed as soon as one is free.
        self._left: list[str] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._starting_one = asyncio.Lock()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start the jobs read, in order, as slots allow: wait for a free slot as arq
        does, then claim every id that fits in the slots free at that moment at once."""
        self._read = len(job_ids)
        await self._start([job_id.decode() for job_id in job_ids])

    async def _start(self, pending: list[str]) -> None:
        """One start at a time (the poll's, or the one a slot given back begins), so that
        whether nothing else runs (`idle`, for a suspect) is true when the claim is made."""
        async with self._starting_one:
            await self._start_in_turn(pending)

    async def _start_in_turn(self, pending: list[str]) -> None:
        self._left = []
        # A job stays in the queue while it runs: what this worker runs now is no claim
        # to try (a round trip, with a slot held, to learn it is claimed).
        pending = [job_id for job_id in pending if not self._running(job_id)]
        while pending and self._alone is None:
            await self.sem.acquire()  # waits while every slot is taken, as arq's does
            if not self.allow_pick_jobs:  # a stop began, or this worker was given up
                self.sem.release()
                return
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                self._full = True  # jobs read and left for want of a slot: see below
                self._left = pending
                return
            self.job_counter += 1
            taken = 1
            # More free slots: taken now without waiting (acquire returns at once).
            while taken < len(pending) and self.job_counter < self.max_jobs:
                if self.sem.locked():
                    break
                await self.sem.acquire()
                self.job_counter += 1
                taken += 1
            batch, pending = pending[:taken], pending[taken:]
            idle = self.job_counter == taken  # nothing else runs: it may take a suspect
            try:
                scores, alone = await self._claim_all(batch, idle)
            except BaseException:
                for _ in batch:
                    self._release_sem_dec_counter_on_complete()
                raise
            for job_id, (score, begun, read) in zip(batch, scores, strict=True):
                if score is None:  # claimed elsewhere, taken back, or not due any more
                    self._release_sem_dec_counter_on_complete()
                    continue
                self._reads[job_id] = read
                if begun:
                    self._begun.add(job_id)
                else:  # an earlier claim's mark whose run never came: not this claim's
                    self._begun.discard(job_id)
                task = self.loop.create_task(self.run_job(job_id, score))
                task.add_done_callback(self._job_ended)
                if begun:  # the mark ends with the task, whether the runner ran or not
                    task.add_done_callback(partial(self._forget_begun, job_id))
                self.tasks[job_id] = task
            if alone:
                self._alone = self.tasks[batch[alone - 1]]
        if pending:  # left while a suspect runs alone: its end wakes the next poll
            self._full = True
            self._left = pending

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run, its first read answered by the claim (`claimed_reads`)."""
        read = self._reads.pop(job_id, None)
        if read is not None:
            answer_first_read(read)
        await super().run_job(job_id, score)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's end of a run (a copy of arq 0.28's), with the job's staged outcome.

        The job's slot is given back first: its function has returned, and the next job
        claimed meanwhile need not wait for this round trip."""
        # arq awaits this under a shield: when the run is cancelled meanwhile (a stop
        # while Redis does not answer), its error is nobody's and asyncio prints it
        # with a traceback at exit. Marked seen; a run still waiting gets it as before.
        if (this := asyncio.current_task()) is not None:
            this.add_done_callback(_seen)
        self._give_back_early(job_id)
        if self._starting:
            # The slot went to a job read before: its claim goes first, so that it is
            # not queued behind this end in Redis and behind the conductors' work the
            # end's message starts (on a machine whose cores the jobs keep busy, each
            # is a wait to be scheduled). The end waits that long at most.
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait(set(self._starting)), CLAIM_FIRST)
        outcome = self._outcomes.pop(job_id, None)
        # A full Redis refuses the end whole (`one_call`): built afresh and tried again
        # until it has room, the job and its receipt kept meanwhile (`while_full`).
        if self._end is None:
            self._end = one_call.commands(self.pool)
        await while_full(partial(arq_ends.end_run, self.pool, self._end, self.queue_name, job_id,
                                 finish, result_data, result_timeout_s, keep_result_forever,
                                 incr_score, keep_in_progress, outcome),
                         arq_job=job_id)  # fmt: skip

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's end of a job it could not run (a copy of arq 0.28's: `arq_ends`)."""
        keep_forever, keep = self.keep_result_forever, self.keep_result_s
        await arq_ends.end_failed(
            self.pool, self.queue_name, job_id, result_data, keep_forever, keep
        )

    async def _poll_iteration(self) -> None:
        self._wake.event.clear()
        self._read = 0
        # With every slot taken arq reads nothing (and `start_jobs` leaves what it read
        # beyond the free slots), while a forward heard before the clear above is
        # forgotten: the slot that frees first then ends the pause instead.
        self._full = self.job_counter >= self.max_jobs
        read_from = round(time.time() * 1000)  # arq's read takes scores up to this or more
        await super()._poll_iteration()
        if self._read < self.queue_read_limit:  # drained of due jobs: pause until woken
            pause = POLL_DELAY
            if read_from < self._wake.due_until:
                pause = await self._until_next_due(read_from)
            if pause > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.event.wait(), pause)

    def _forward_can_wait(self) -> bool:
        """With every slot busy a poll reads nothing: a forward's wake-up would only cost
        a poll. The slot given back first reads the queue instead (`_slot_given_back`)."""
        if self.job_counter < self.max_jobs or not self.allow_pick_jobs:
            return False
        self._full = True
        return True

    def _running(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()

    async def _until_next_due(self, read_from: int) -> float:
        """Seconds until arq's clock, rounded to the ms as arq rounds it, reaches the
        score of the next job that the last read may have left (at most `POLL_DELAY`):
        0 when that is now."""
        upcoming = await self.pool.zrangebyscore(
            self.queue_name, f"({read_from}", "+inf", start=0, num=1, withscores=True
        )
        if not upcoming:
            return POLL_DELAY
        # round(time * 1000) reaches the score from half a ms before it (a hair more:
        # round() takes an exact half to the even side)
        due = (float(upcoming[0][1]) - 0.49) / 1000
        return min(max(due - time.time(), 0.0), POLL_DELAY)

    async def _claim_all(
        self, job_ids: list[str], idle: bool
    ) -> tuple[list[tuple[int | None, bool, Read]], int]:
        """Each job's queue score when this worker claimed it, else None, whether the
        claim began it and its run's first read; and the position (from 1) of the
        suspect claimed alone, 0 when none (see the script)."""
        if self._claim is None:
            self._claim = script(self.pool, "start_jobs")
        # arq's clock for scores, the worker's, rounded as arq's read rounds it: a job
        # arq read as due is due here too (lua/forward.lua scores one forwarded ahead
        # of its instant so that this is never before the instant)
        now_ms = round(time.time() * 1000)
        replies = await self._claim(
            keys=[self.queue_name, self._holding],
            args=[
                arq_jobs.IN_PROGRESS_KEY_PREFIX, int(self.in_progress_timeout_s * 1000),
                now_ms, self._pool_name, arq_jobs.RETRY_KEY_PREFIX, "1" if idle else "0",
                self._keys.root, arq_jobs.JOB_KEY_PREFIX, self._worker_id,
                self._keys.running(""), *job_ids,
            ],
        )  # fmt: skip
        scores, begun, alone, payloads, tries = replies
        claims = [
            (None if not score else int(float(score)), bool(began),
             Read(job_id, payload or None, int(tried)))
            for job_id, score, began, payload, tried in zip(
                job_ids, scores, begun, payloads, tries, strict=True)
        ]  # fmt: skip
        return claims, int(alone)

    def _forget_begun(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._begun.discard(job_id)

    def _give_back_early(self, job_id: str) -> None:
        task = self.tasks.get(job_id)  # this run's: the next run of the id is not claimed
        if task is not None and task not in self._given_back:  # before this end is written
            self._given_back.add(task)
            self._slot_given_back(task)

    def _job_ended(self, task: asyncio.Task[None]) -> None:
        if task in self._given_back:
            self._given_back.discard(task)
        else:
            self._slot_given_back(task)

    def _slot_given_back(self, task: asyncio.Task[None]) -> None:
        if task is self._alone:
            self._alone = None  # the suspect ended: others may start again
        self._release_sem_dec_counter_on_complete()
        if not self._full:
            return
        # The last start left jobs for want of a slot: claim those now, without reading
        # the queue again (a claim checks each is still there and due), then read it.
        self._full = False
        left, self._left = self._left, []
        if left and self._alone is None and self.allow_pick_jobs:
            starting = self.loop.create_task(self._start_left(left))
            self._starting.add(starting)
            starting.add_done_callback(self._starting.discard)
        else:
            self._wake.wake()

    def abandon(self) -> None:
        """This worker is given up (Redis went away; the process starts another): it
        claims nothing more, whatever its jobs' ends give back."""
        self.allow_pick_jobs = False
        for starting in list(self._starting):
            starting.cancel()

    async def _start_left(self, left: list[str]) -> None:
        try:
            await self._start(left)
        except (RedisError, OSError):
            pass  # the poll this wakes meets the same trouble, and arq's handling of it
        finally:
            self._wake.wake()


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
