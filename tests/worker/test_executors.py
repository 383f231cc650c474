"""The `process` executor from the worker's side, without Redis: what crosses a child's
pipe, and a request that cannot cross it."""

from __future__ import annotations

import threading

import pytest

from orchestrator.job_context import JobContext
from orchestrator.registry import task_registry
from orchestrator.worker.executors import ProcessExecutor, TaskFailed, executor

PACKAGES = ("tests.fixtures.sync_tasks",)


async def test_arguments_pickle_refuses_fail_that_job_only_and_the_child_serves_on() -> None:
    """Only a Python caller can pass such arguments (a manifest's are JSON): refused
    before a byte is sent, so the child is not left half-way through a request."""
    registry = task_registry(PACKAGES)
    job = JobContext("a:1", "a", 1)
    async with executor("process", 1, registry, PACKAGES, 0) as runs:
        assert isinstance(runs, ProcessExecutor)
        where = registry["sync.where"].function
        first = await runs.run("sync.where", where, [], {}, job)
        with pytest.raises(TaskFailed, match="cannot send to the task's process") as refused:
            await runs.run("sync.where", where, [threading.Lock()], {}, job)
        assert refused.value.type_name == "UnpicklableArguments"
        after = await runs.run("sync.where", where, [], {}, job)
        assert after["pid"] == first["pid"]  # the same child, not replaced


async def test_results_of_every_size_come_back_whole() -> None:
    """Small, over the 16 KiB the child's connection sends in one write, over a pipe's
    buffer: each read whole on the loop, in order, from one child."""
    registry = task_registry(PACKAGES)
    job = JobContext("b:1", "b", 1)
    repeat = registry["sync.repeat"].function
    async with executor("process", 1, registry, PACKAGES, 0) as runs:
        for size in (1, 16_380, 16_400, 70_000, 3_000_000):
            result = await runs.run("sync.repeat", repeat, ["xy", size], {}, job)
            assert result["text"] == "xy" * size
