"""Structured logging, configured once at start-up: one JSON object a line, or a
readable console rendering when the stream is a terminal.

Events are short snake_case names (`dispatched`, `routed`); context such as `job_id`,
`backlog` or `manifest` goes in key/values, never into the message. A long-running
process says that Redis stopped answering once per outage (`RedisOutage`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import FilteringBoundLogger

from orchestrator import tracing

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _trace_ids(
    logger: Any, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`trace_id` and `span_id` of the span active when the line is written, so that logs
    and traces join; one test of a flag while tracing is off."""
    if tracing.enabled:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event.setdefault("trace_id", format(context.trace_id, "032x"))
            event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    console = fmt == "console" or (fmt == "auto" and (stream or sys.stdout).isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        _trace_ids,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_json),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_: _Lines(stream),
        cache_logger_on_first_use=False,
    )


class _Lines:
    """structlog's output: each event one `write` of the line and its newline, flushed.

    structlog's PrintLogger prints, which writes a line and its newline apart: processes
    that share one file (`up`'s children) then left two events on one line when they
    logged at the same moment. `stream` None: the process's stdout as it is then."""

    _lock = threading.Lock()  # the process's threads share the stream

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _json(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


# Seconds after Redis answered again during which a failure is taken for a call made
# while it was away, that took this long to fail (`connection.COMMAND_TIMEOUT`): not a
# new outage. A real one is still logged, by the failures that follow.
STALE = 5.0


class RedisOutage:
    """Whether Redis answers, as one process sees it: `redis_unavailable` (a warning,
    with the reason) when a call first fails, `redis_available` (`unavailable_for`: the
    seconds since that failure) when one succeeds again, and the failures in between at
    debug level only.

    A frozen or partitioned Redis fails every loop of a process (its rounds, heartbeat,
    doorbell, cancel checks) every few seconds for as long as it lasts: one warning
    each time would bury the line that says when it began. Not thread-safe: one event
    loop's."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        self.log = log
        self.since: float | None = None  # monotonic: the first failure of this outage
        self._back_at = -STALE  # monotonic: when the last outage ended

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, **context: Any) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        now = time.monotonic()
        if self.since is None and now - self._back_at >= STALE:
            self.since = now
            self.log.warning("redis_unavailable", error=reason, **context)
        else:
            self.log.debug("redis_still_unavailable", error=reason, **context)

    def answered(self) -> None:
        if self.since is not None:
            self._back_at = time.monotonic()
            away, self.since = self._back_at - self.since, None
            self.log.info("redis_available", unavailable_for=round(away, 1))
