"""Traces end to end: real dispatch, conductor and worker processes, each exporting its
spans with the real OTLP/HTTP exporter (turned on by the standard OTEL_* environment) to
a receiver this test runs. A job's spans — the dispatch of its manifest, its routing,
each of its runs — share one trace, with the kinds, names and attributes of the
messaging conventions; retries, a recovery after a SIGKILL, a requeue from the dead
letters and a cancel land in the same trace."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import StackFactory
from tests.live_stack import REPO, Stack, write_manifest
from tests.tracing.receiver import Received, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def traced(stack: StackFactory, receiver: Receiver, **settings: object) -> Stack:
    run = stack(**settings)
    run.env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave within a moment
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    run.env.pop("OTEL_SERVICE_NAME", None)  # each process names itself
    return run


def by_name(spans: list[Received], prefix: str) -> list[Received]:
    return [span for span in spans if span.name.startswith(prefix)]


def test_a_jobs_dispatch_routing_and_run_are_one_trace(
    stack: StackFactory, receiver: Receiver, tmp_path: Path
) -> None:
    run = traced(stack, receiver)
    run.worker("metal", 2)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "traced_01.jsonl", [
        {"task": "system.echo", "args": ["hi"], "id": "echo-1"},
    ]))  # fmt: skip
    run.wait_for_receipts("traced_01", 1)
    receiver.wait(lambda: len(receiver.of_job("echo-1")) == 2, "the route and process spans")
    receiver.wait(lambda: bool(receiver.named("send backlog:default")), "the dispatch span")
    (send,) = receiver.named("send backlog:default")
    (route,) = by_name(receiver.of_job("echo-1"), "route ")
    (process,) = by_name(receiver.of_job("echo-1"), "process ")
    queue = run.keys.pool_queue("metal")
    # one trace, each process its own service, parent to child in the job's order
    assert send.trace_id == route.trace_id == process.trace_id
    assert (send.service, route.service, process.service) == (
        "orchestrator-dispatch", "orchestrator-conductor", "orchestrator-worker",
    )  # fmt: skip
    assert (route.parent_id, process.parent_id) == (send.span_id, route.span_id)
    assert (send.kind, route.kind, process.kind) == ("producer", "producer", "consumer")
    assert route.name == f"route {queue}"
    assert process.name == f"process {queue}"
    assert send.attributes["orchestrator.batch"] == "traced_01"
    assert send.attributes["messaging.batch.message_count"] == 1
    assert send.attributes["messaging.operation.type"] == "send"
    assert route.attributes | {"orchestrator.pool": "metal"} == route.attributes
    assert route.attributes["orchestrator.routing_reason"] == "metal_free"
    assert route.attributes["messaging.destination.name"] == queue
    assert route.attributes["orchestrator.task"] == "system.echo"
    assert process.attributes["orchestrator.attempt"] == 1
    assert process.attributes["orchestrator.outcome"] == "succeeded"
    assert process.attributes["messaging.operation.type"] == "process"
    assert not process.error


def test_a_retry_and_a_dead_letter_and_its_requeue_stay_in_the_jobs_trace(
    stack: StackFactory, receiver: Receiver, tmp_path: Path
) -> None:
    run = traced(stack, receiver, max_tries="2")
    run.worker("metal", 2)
    run.conductor()
    marker = tmp_path / "flaky-marker"
    run.dispatch(write_manifest(tmp_path / "tries_01.jsonl", [
        {"task": "image.flaky", "args": [str(marker)], "id": "flaky-1"},
        {"task": "image.broken", "args": [], "id": "broken-1"},
    ]))  # fmt: skip
    run.wait_for_receipts("tries_01", 2)
    receiver.wait(lambda: len(by_name(receiver.of_job("flaky-1"), "process")) == 2, "2 runs")
    first, second = sorted(
        by_name(receiver.of_job("flaky-1"), "process"),
        key=lambda s: s.attributes["orchestrator.attempt"],
    )
    assert first.trace_id == second.trace_id
    assert first.attributes["orchestrator.outcome"] == "retrying"
    assert first.error
    assert first.attributes["error.type"]
    assert second.attributes["orchestrator.outcome"] == "succeeded"

    receiver.wait(lambda: len(by_name(receiver.of_job("broken-1"), "process")) == 2, "its runs")
    runs = by_name(receiver.of_job("broken-1"), "process")
    last = max(runs, key=lambda s: s.attributes["orchestrator.attempt"])
    assert last.attributes["orchestrator.outcome"] == "failed"
    assert last.error
    assert last.attributes["error.type"]
    (route,) = by_name(receiver.of_job("broken-1"), "route")

    requeued = run.command("dlq", "requeue", "broken-1")
    assert requeued.returncode == 0, requeued.stderr
    receiver.wait(lambda: len(by_name(receiver.of_job("broken-1"), "route")) == 2, "its reroute")
    reroute = next(s for s in by_name(receiver.of_job("broken-1"), "route") if s != route)
    assert reroute.trace_id == route.trace_id


def test_a_producers_traceparent_on_a_bare_line_continues_its_trace(
    stack: StackFactory, receiver: Receiver
) -> None:
    run = traced(stack, receiver)
    run.worker("metal", 1)
    run.conductor()
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    meta = {"batch": "producer_01", "traceparent": f"00-{trace_id}-{span_id}-01"}
    line = {"task": "system.echo", "args": [1], "id": "bare-1", "meta": meta}
    run.redis.sadd(run.keys.backlogs, "backlog:default")
    run.redis.rpush(run.keys.backlog("backlog:default"), orjson.dumps(line))
    run.wait_for_receipts("producer_01", 1)
    receiver.wait(lambda: len(receiver.of_job("bare-1")) == 2, "its spans")
    (route,) = by_name(receiver.of_job("bare-1"), "route")
    (process,) = by_name(receiver.of_job("bare-1"), "process")
    assert route.trace_id == process.trace_id == trace_id
    assert route.parent_id == span_id
    assert route.attributes["orchestrator.backlog"] == "backlog:default"


def test_a_job_recovered_after_its_worker_is_killed_and_a_cancel_are_in_the_trace(
    stack: StackFactory, receiver: Receiver, tmp_path: Path
) -> None:
    run = traced(stack, receiver)
    doomed = run.worker("metal", 1)
    run.conductor()
    run.dispatch(write_manifest(tmp_path / "killed_01.jsonl", [
        {"task": "system.sleep", "args": [1.5], "id": "sleeper-1"},
    ]))  # fmt: skip
    run.wait_running("killed_01", 1)
    doomed.send_signal(signal.SIGKILL)  # its run's span dies with it, never sent
    doomed.wait()
    run.worker("metal", 1)
    run.wait_for_receipts("killed_01", 1)
    run.dispatch(write_manifest(tmp_path / "stopped_01.jsonl", [
        {"task": "system.sleep", "args": [30], "id": "sleeper-2"},
    ]))  # fmt: skip
    run.wait_running("stopped_01", 1)
    cancelled = run.command("cancel", "stopped_01", "--running")
    assert cancelled.returncode == 0, cancelled.stderr
    for job_id in ("sleeper-1", "sleeper-2"):
        receiver.wait(lambda job_id=job_id: bool(by_name(receiver.of_job(job_id), "process")),
                      f"the run of {job_id}")  # fmt: skip
    sends = {s.attributes["orchestrator.batch"]: s for s in receiver.named("send backlog:")}
    outcomes = {}
    for job_id, batch in (("sleeper-1", "killed_01"), ("sleeper-2", "stopped_01")):
        spans = receiver.of_job(job_id)
        assert {s.trace_id for s in spans} == {sends[batch].trace_id}, spans
        (process,) = by_name(spans, "process")
        outcomes[job_id] = process.attributes["orchestrator.outcome"]
    assert outcomes == {"sleeper-1": "succeeded", "sleeper-2": "cancelled"}


def test_without_the_otel_environment_nothing_is_exported(
    stack: StackFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """No OTEL_* variables: no span anywhere (the receiver would get them)."""
    run = stack()
    run.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT_UNUSED"] = receiver.endpoint
    run.worker("metal", 1)
    run.conductor()
    run.dispatch(
        write_manifest(tmp_path / "quiet_01.jsonl", [{"task": "system.echo", "args": [1]}])
    )
    run.wait_for_receipts("quiet_01", 1)
    run.stop()
    assert receiver.spans == []


def test_asking_for_grpc_without_its_exporter_is_one_line(tmp_path: Path, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url, "OTEL_TRACES_EXPORTER": "otlp",
             "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the grpc exporter" in done.stderr
