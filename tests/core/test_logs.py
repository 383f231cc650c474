"""Log lines as processes that share one file write them (`up`'s children do)."""

from __future__ import annotations

import io

import orjson
import structlog

from orchestrator.logs import configure_logging


class _Writes(io.StringIO):
    """A stream that keeps each `write` call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_event_is_one_write_with_its_newline() -> None:
    """Two processes logging at the same moment into one file must not leave two events
    on one line: the line and its newline go in one write (print wrote them apart)."""
    stream = _Writes()
    configure_logging("info", "json", stream)
    try:
        structlog.get_logger("test").info("redis_available", unavailable_for=1.0)
        structlog.get_logger("test").warning("redis_unavailable", reason="frozen")
    finally:
        configure_logging("info", "json")
    assert len(stream.calls) == 2, stream.calls
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in stream.calls)
    events = [orjson.loads(call)["event"] for call in stream.calls]
    assert events == ["redis_available", "redis_unavailable"]
