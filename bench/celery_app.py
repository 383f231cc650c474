"""The Celery side of bench/tasks.py: the same task bodies as `bench.sync_tasks.cpu`,
on a Celery app with its Redis broker and result backend at `BENCH_CELERY_REDIS` — a
database of the bench's own private Redis, never a default that may be someone's."""

from __future__ import annotations

import os

from celery import Celery

from bench.sync_tasks import cpu

redis_url = os.environ["BENCH_CELERY_REDIS"]  # set by bench/tasks.py
app = Celery("bench", broker=redis_url, backend=redis_url)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_extended=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)
spin = app.task(name="bench.spin")(cpu.spin)
nap = app.task(name="bench.nap")(cpu.nap)
