"""The tracing module with the SDK's in-memory exporter (no processes): the context in
a job's `meta`, a span that records what escaped it, and log lines that carry the ids
of the span active when they are written."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestrator import tracing
from orchestrator.logs import configure_logging


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def test_off_by_default_and_on_only_when_the_environment_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert not tracing.wanted()
    assert not tracing.enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.wanted()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing.wanted()


def test_a_jobs_meta_carries_the_context_to_its_next_span(
    exported: InMemorySpanExporter,
) -> None:
    meta: dict[str, object] = {"batch": "b"}
    with tracing.span("route q", kind="producer") as first:
        tracing.put_context(meta, first)
    with tracing.span("process q", kind="consumer", parent=tracing.context_of(meta)):
        pass
    route, process = exported.get_finished_spans()
    assert process.parent is not None
    assert process.parent.span_id == route.context.span_id
    assert process.context.trace_id == route.context.trace_id
    assert (route.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert str(meta["traceparent"]).startswith("00-")
    assert tracing.context_of({"traceparent": "garbage"}) is None
    assert tracing.context_of({}) is None


def test_an_exception_escaping_a_span_is_recorded_with_its_type(
    exported: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError, match="bad"), tracing.span("process q"):
        raise ValueError("bad")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert [event.name for event in span.events] == ["exception"]


def test_log_lines_carry_the_active_spans_ids(exported: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    log = structlog.get_logger("test")
    with tracing.span("process q") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = (orjson.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside
