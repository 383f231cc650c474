"""OpenTelemetry traces, optional: one trace per dispatched batch (or per bare line a
producer pushed), with every job's routing and runs in it.

Off unless the `otel` extra is installed *and* the standard environment asks for traces
(`OTEL_TRACES_EXPORTER`, or an `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`); then each
process exports its spans over OTLP (http/protobuf; `grpc` with the grpc exporter
installed) in a background thread, as the SDK's batch processor does, and reads the rest
of the standard settings itself (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, headers…).
Off, every hook is one test of `enabled`: nothing is imported, nothing is paid per job.

The trace context travels in the job's envelope, as W3C `traceparent`/`tracestate` in
`meta` — which a producer in any language can set on a bare line to continue its own
trace. `dispatch` makes one PRODUCER span per manifest and records its context on the
batch; the conductor's routing span of each job is its child, and puts its own context
in the envelope for the worker's run. Retries, recoveries and requeues carry the
envelope, so they land in the same trace. Names and attributes follow the OpenTelemetry
messaging conventions (v1.27, still "development"): span names `{operation} {destination}`,
`messaging.*` attributes, and this project's own under `orchestrator.*`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, Tracer

SYSTEM = "orchestrator"  # messaging.system: the project is the messaging system here
SCOPE = "orchestrator"
TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
_ASKING = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)

enabled = False  # read on every hot path: the one cost of tracing while it is off
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (an exporter named, or an endpoint)."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(environ.get(name) for name in _ASKING)


def setup(role: str) -> bool:
    """Start exporting this process's spans when the environment asks for it; whether it
    does. A request the installed packages cannot serve is one line (UserError)."""
    if enabled or not wanted():
        return enabled
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise UserError(
            "OTEL_* settings ask for traces, but OpenTelemetry is not installed: "
            "pip install 'orchestrator[otel]' (or unset OTEL_TRACES_EXPORTER and "
            "OTEL_EXPORTER_OTLP_ENDPOINT)"
        ) from None
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"orchestrator-{role}"}
    )
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER is read by the SDK
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    install(provider)
    return True


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise UserError(
            f"OTEL_TRACES_EXPORTER={kind!r} is not supported: use otlp, console or none"
        )
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            raise UserError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the grpc exporter: pip install "
                "opentelemetry-exporter-otlp-proto-grpc (or use http/protobuf)"
            ) from None
        return OTLPSpanExporter()
    if protocol != "http/protobuf":
        raise UserError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf or grpc"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()


def install(provider: TracerProvider) -> None:
    """Use `provider` (the tests give one with an in-memory exporter)."""
    global enabled, _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)
    enabled = True


def uninstall() -> None:
    global enabled, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    enabled, _tracer, _provider = False, None, None


def flush(timeout_millis: int = 5000) -> None:
    """Export what is buffered now: a one-shot command is about to exit."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def tracer() -> Tracer:
    assert _tracer is not None, "tracing.tracer() while tracing is off"
    return _tracer


# --- the context in envelopes ---------------------------------------------------------


def context_of(meta: Mapping[str, Any] | None) -> Context | None:
    """The trace context a job's `meta` carries (W3C), or None."""
    if not meta or not isinstance(meta.get(TRACEPARENT), str):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {TRACEPARENT: meta[TRACEPARENT]}
    if isinstance(meta.get(TRACESTATE), str):
        carrier[TRACESTATE] = meta[TRACESTATE]
    context = TraceContextTextMapPropagator().extract(carrier)
    from opentelemetry import trace

    return context if trace.get_current_span(context).get_span_context().is_valid else None


def carrier_of(span: Span) -> dict[str, str]:
    """`span`'s context as `traceparent` (and `tracestate`) fields."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier


def current_carrier() -> dict[str, str]:
    """The active span's context as `traceparent` (and `tracestate`) fields; empty when
    no span is active."""
    from opentelemetry import trace

    current = trace.get_current_span()
    return carrier_of(current) if current.get_span_context().is_valid else {}


def put_context(meta: MutableMapping[str, Any], span: Span) -> None:
    """The job's `meta` carries `span`'s context from now on (its later spans' parent)."""
    meta.pop(TRACESTATE, None)
    meta.update(carrier_of(span))


def messaging(operation: str, kind: str, destination: str, **extra: Any) -> dict[str, Any]:
    """The messaging attributes of a span (`operation`: its name; `kind`: its type)."""
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": destination,
    }
    return attributes | {k: v for k, v in extra.items() if v is not None}


@contextmanager
def span(
    name: str,
    *,
    kind: str = "internal",
    parent: Context | None = None,
    links: list[Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: float | None = None,
) -> Iterator[Span]:
    """A span (kind by name: internal, producer, consumer, client, server) that records
    an exception escaping it with `error.type`, as the conventions ask."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    started = None if start_time is None else int(start_time * 1e9)
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind[kind.upper()], links=links,
        attributes=dict(attributes or {}), start_time=started,
        record_exception=False, set_status_on_exception=False,
    ) as current:  # fmt: skip
        try:
            yield current
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                current.record_exception(exc)
                current.set_attribute("error.type", type(exc).__qualname__)
                current.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise


def ended(span: Span, outcome: str, error_type: str | None = None) -> None:
    """How the job came out of this step: `orchestrator.outcome`, and for a failure
    `error.type` and an error status (a retry too: that run failed)."""
    span.set_attribute("orchestrator.outcome", outcome)
    if error_type:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, f"{outcome}: {error_type}"))
