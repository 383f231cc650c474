"""Retry: put a batch's failed, dead-lettered or cancelled jobs back in line.

Each job goes back under its own id, with arq's state of its earlier run cleared, onto
the ready list (served before the backlogs), and is pending again until its new run
writes a receipt. Failed and dead-lettered jobs come back from their dead letters,
exactly as `dlq requeue` does it (`deadletters.requeue`); cancelled ones from the
envelopes the cancel kept (`lua/retry_cancelled.lua`, which also lifts the batch's
cancel). Both steps are atomic per job and compare what they read, so two operators
retrying at once requeue each job once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from orchestrator import arq_jobs
from orchestrator.control import deadletters
from orchestrator.control.lookup import unknown_batch
from orchestrator.errors import UserError
from orchestrator.job import requeued
from orchestrator.keys import Keys
from orchestrator.scripts import script

CHUNK = 200  # jobs per retry_cancelled call
UNSUCCESSFUL = ("failed", "dead")  # receipt statuses `--failed` retries


@dataclass
class RetryReport:
    batch: str
    failed: Counter[str] = field(default_factory=Counter)  # outcome → jobs
    cancelled: Counter[str] = field(default_factory=Counter)
    no_record: list[str] = field(default_factory=list)  # failed, but its dead letter purged

    @property
    def requeued(self) -> int:
        return self.failed["requeued"] + self.cancelled["requeued"]

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "requeued": self.requeued,
            "failed": dict(self.failed),
            "cancelled": dict(self.cancelled),
            "failed_without_dead_letter": self.no_record,
        }


async def retry_batch(
    redis: Redis, keys: Keys, batch: str, *, failed: bool, cancelled: bool
) -> RetryReport:
    record = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.batch(batch))).items()}  # type: ignore[misc]
    if "created_at" not in record:
        raise await unknown_batch(redis, keys, batch, "nothing was retried")
    if failed and not cancelled and "cancelled_at" in record:
        raise UserError(
            f"batch {batch!r} is cancelled, so its retried jobs would be cancelled again: "
            "add --cancelled to lift the cancel (and retry its cancelled jobs too)"
        )
    report = RetryReport(batch)
    if cancelled:
        await _retry_cancelled(redis, keys, batch, report)
    if failed:
        await _retry_failed(redis, keys, batch, report)
    if report.requeued:
        await redis.publish(keys.events, "retry")  # conductors waiting for work look again
    return report


async def _retry_failed(redis: Redis, keys: Keys, batch: str, report: RetryReport) -> None:
    entries = [e for e in await deadletters.read_all(redis, keys) if e.batch == batch]
    groups = deadletters.group(entries)
    for result in await deadletters.requeue(redis, keys, groups):
        report.failed[result.outcome] += 1
    async for job_id, raw in redis.hscan_iter(keys.receipts(batch), count=1000):
        receipt = orjson.loads(raw)
        if receipt.get("status") in UNSUCCESSFUL and job_id.decode() not in groups:
            report.no_record.append(job_id.decode())


async def _retry_cancelled(redis: Redis, keys: Keys, batch: str, report: RetryReport) -> None:
    run = script(redis, "retry_cancelled")
    fixed = [keys.batch(batch), keys.cancelled(batch), keys.receipts(batch)]
    fixed += [keys.stop_running, keys.ready, keys.doorbell]
    per_job = len(arq_jobs.run_keys(""))
    found: list[tuple[bytes, bytes]] = [
        pair async for pair in redis.hscan_iter(keys.cancelled(batch), count=1000)
    ]
    for start in range(0, max(len(found), 1), CHUNK):  # once even with none: lifts the cancel
        chunk = found[start : start + CHUNK]
        script_keys: list[str] = list(fixed)
        args: list[Any] = [batch, per_job]
        for job_id, stored in chunk:
            script_keys += arq_jobs.run_keys(keys.arq_job_id(job_id.decode()))
            args += [job_id, stored, requeued(orjson.loads(stored)) if stored else b""]
        for outcome in await run(keys=script_keys, args=args):
            report.cancelled[outcome.decode()] += 1
