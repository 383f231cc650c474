"""Cancel interleaved with conductor rounds and worker starts, in every order hypothesis
finds: no job both runs and is reported cancelled, and after a cancel returns no job it
names starts.

A real conductor (its rounds driven one at a time) and the real cancel run against the
session's Redis; the worker is the part of one that matters here — claim the job the way
arq does (its in-progress key), then the real `begin` check — so each step is atomic
exactly where production's is.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import anyio
import orjson
import pytest
import redis.asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator import arq_jobs
from orchestrator.conductor.rounds import Conductor
from orchestrator.control.cancel import Canceller
from orchestrator.keys import Keys
from orchestrator.receipts import Receipt, stage
from orchestrator.settings import load_settings
from orchestrator.worker.stops import begin

BATCHES = ("alpha", "beta")
JOBS = 5  # per batch
STEP = st.one_of(
    st.just(("round",)),
    st.just(("claim",)),
    st.just(("start",)),
    st.tuples(st.just("late"), st.sampled_from(BATCHES)),
    st.just(("finish",)),
    st.tuples(st.just("cancel_batch"), st.sampled_from(BATCHES)),
    st.tuples(st.just("cancel_job"), st.sampled_from(BATCHES), st.integers(1, JOBS)),
)


@dataclass
class World:
    redis: redis.asyncio.Redis
    keys: Keys
    conductor: Conductor
    canceller: Canceller
    started: dict[tuple[str, str], float] = field(default_factory=dict)  # job → began at
    claimed: list[str] = field(default_factory=list)  # arq ids claimed, not yet begun
    late: int = 0  # jobs dispatched during the run
    running: list[tuple[str, str, str]] = field(default_factory=list)  # (batch, id, arq id)
    cancels: list[tuple[float, tuple[str, ...], tuple[tuple[str, str], ...]]] = field(
        default_factory=list
    )


async def setup(url: str) -> World:
    namespace = f"p{uuid.uuid4().hex[:10]}"
    config = load_settings(
        None, redis_url=url, namespace=namespace, heartbeat_interval=0.02, idle_block=0.01
    )
    client = redis.asyncio.Redis.from_url(url)
    keys = Keys(namespace)
    worker = keys.worker("metal", "sim")
    await client.hset(worker, mapping={"slots": 3, "running": 0, "tasks": "system.sleep"})
    await client.sadd(keys.workers("metal"), "sim")
    now = time.time()
    for batch in BATCHES:
        await client.hset(
            keys.batch(batch),
            mapping={"created_at": now, "total": JOBS, "queued": JOBS, "complete": 1},
        )
        await client.zadd(keys.batches, {batch: now})
        envelopes = [
            orjson.dumps({"id": f"{batch}:{n}", "batch": batch, "task": "system.sleep",
                          "args": [0], "dispatched_at": now})
            for n in range(1, JOBS + 1)
        ]  # fmt: skip
        await client.rpush(keys.backlog("backlog:default"), *envelopes)
    conductor = Conductor(config, client)
    conductor._hold_until = 0.0  # the simulated worker has announced itself
    return World(client, keys, conductor, Canceller(client, config))


async def claim_one(world: World) -> None:
    """What an arq worker does first: claim the next queued job (its in-progress key).

    A job of a batch cancelled before it was forwarded must never have got here: the
    conductor checks as it forwards (the forward time is its in-flight score)."""
    for raw in await world.redis.zrange(world.keys.pool_queue("metal"), 0, -1):
        arq_id = raw.decode()
        claim = arq_jobs.IN_PROGRESS_KEY_PREFIX + arq_id
        if await world.redis.set(claim, 1, nx=True, px=60000):
            world.claimed.append(arq_id)
            payload = await world.redis.get(arq_jobs.JOB_KEY_PREFIX + arq_id)
            envelope = arq_jobs.envelope_in(payload)
            assert envelope is not None
            job = (envelope["batch"], envelope["id"])
            sent_ms = await world.redis.zscore(world.keys.inflight("metal"), envelope["id"])
            assert sent_ms is not None
            for returned, batches, jobs in world.cancels:
                named = job[0] in batches or job in jobs
                assert not (named and sent_ms / 1000 > returned), f"{job} forwarded after cancel"
            return


async def start_one(world: World) -> None:
    """Then, maybe much later, the real begin check before the task runs."""
    if not world.claimed:
        return
    keys, client = world.keys, world.redis
    arq_id = world.claimed.pop(0)
    envelope = arq_jobs.envelope_in(await client.get(arq_jobs.JOB_KEY_PREFIX + arq_id))
    assert envelope is not None
    at = time.time()
    running = Receipt(
        job_id=envelope["id"], batch=envelope["batch"], task=envelope["task"],
        status="running", pool="metal", worker="sim", attempt=1, started_at=at,
        ended_at=at, duration=0.0, error=None,
    )  # fmt: skip
    job = (envelope["batch"], envelope["id"])
    if await begin(client, keys, envelope, running, arq_id=arq_id, worker_id="sim"):
        world.started[job] = at
        world.running.append((*job, arq_id))
    else:
        await _arq_done(client, keys.pool_queue("metal"), arq_id)


async def dispatch_late(world: World, batch: str) -> None:
    """A job of `batch` reaching the backlog now (a dispatch still committing)."""
    world.late += 1
    envelope = {"id": f"{batch}:late{world.late}", "batch": batch, "task": "system.sleep",
                "args": [0], "dispatched_at": time.time()}  # fmt: skip
    await world.redis.rpush(world.keys.backlog("backlog:default"), orjson.dumps(envelope))
    await world.redis.hincrby(world.keys.batch(batch), "total", 1)
    await world.redis.hincrby(world.keys.batch(batch), "queued", 1)


async def finish_one(world: World) -> None:
    if not world.running:
        return
    batch, job_id, arq_id = world.running.pop(0)
    at = time.time()
    done = Receipt(
        job_id=job_id, batch=batch, task="system.sleep", status="succeeded", pool="metal",
        worker="sim", attempt=1, started_at=world.started[(batch, job_id)], ended_at=at,
        duration=0.0, error=None,
    )  # fmt: skip
    async with world.redis.pipeline(transaction=True) as pipe:  # as the worker ends a job
        stage(pipe, world.keys, done, finished=True, arq_job_id=arq_id)
        await pipe.execute()
    await _arq_done(world.redis, world.keys.pool_queue("metal"), arq_id)


async def _arq_done(client: redis.asyncio.Redis, queue: str, arq_id: str) -> None:
    await client.zrem(queue, arq_id)
    await client.delete(arq_jobs.JOB_KEY_PREFIX + arq_id, arq_jobs.IN_PROGRESS_KEY_PREFIX + arq_id)


async def play(url: str, steps: list[tuple[object, ...]]) -> None:
    world = await setup(url)
    try:
        drain = [("round",), *[("claim",), ("start",), ("finish",)] * 3] * 6
        for step in [*steps, *drain]:
            kind = step[0]
            if kind == "round":
                with anyio.move_on_after(0.2):
                    await world.conductor._round()
            elif kind == "claim":
                await claim_one(world)
            elif kind == "start":
                await start_one(world)
            elif kind == "late":
                await dispatch_late(world, str(step[1]))
            elif kind == "finish":
                await finish_one(world)
            elif kind == "cancel_batch":
                batch = str(step[1])
                await world.canceller.batches([batch], running=False, wait=0.0)
                world.cancels.append((time.time(), (batch,), ()))
            else:
                job = (str(step[1]), f"{step[1]}:{step[2]}")
                if job not in world.started or job in [(b, j) for b, j, _ in world.running]:
                    # (an id that finished is reported so; nothing here is unknown)
                    await world.canceller.jobs([job[1]], running=False, wait=0.0)
                    world.cancels.append((time.time(), (), (job,)))
        receipts = {}
        for batch in BATCHES:
            for job_id, raw in (await world.redis.hgetall(world.keys.receipts(batch))).items():
                receipts[(batch, job_id.decode())] = orjson.loads(raw)
        for job, receipt in receipts.items():
            if job in world.started:
                assert receipt["status"] != "cancelled", f"{job} ran and was reported cancelled"
            elif receipt["status"] != "cancelled":
                pytest.fail(f"{job} has receipt {receipt['status']} but never started")
        for returned, batches, jobs in world.cancels:
            for job, began in world.started.items():
                if job[0] in batches or job in jobs:
                    assert began < returned, f"{job} started after the cancel that named it"
        named = {b for _, batches, _ in world.cancels for b in batches}
        for job in receipts.keys() | world.started.keys():
            if job[0] in named and job not in world.started:
                assert receipts[job]["status"] == "cancelled", f"{job} was not cancelled"
            if job[0] not in named and job not in world.started:
                assert any(job in jobs for _, _, jobs in world.cancels), f"{job} never ran"
        everything = JOBS * len(BATCHES) + world.late
        assert len(receipts.keys() | world.started.keys()) == everything, "a job was lost"
    finally:
        await world.redis.aclose()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=1, max_size=30))
# The two races the checks exist for, always tried: a job claimed by a worker when the
# cancel comes (begin.lua), and one reaching the backlog after the cancel (forward.lua).
@example(steps=[("round",), ("claim",), ("cancel_batch", "alpha"), ("start",)])
@example(steps=[("cancel_batch", "beta"), ("late", "beta"), ("round",), ("claim",)])
@example(steps=[("round",), ("claim",), ("cancel_job", "alpha", 1), ("start",)])
def test_no_job_both_runs_and_is_reported_cancelled(
    redis_url: str, steps: list[tuple[object, ...]]
) -> None:
    anyio.run(play, redis_url, steps)
