"""What traces cost: dispatch and end to end, with tracing off and on, interleaved.

    pip install -e '.[bench,otel]'
    python bench/tracing.py            # 100,000-line dispatch, 6,000 jobs end to end
    python bench/tracing.py --quick

- **dispatch**: `dispatch_manifest` of a 100,000-line manifest in this process, off
  (no provider) and on (the SDK's batch processor and the real OTLP/HTTP exporter);
- **end to end**: `bench/peers.py`'s run of ours (dispatch → a conductor process → a
  worker of 100 slots), every process exporting its spans when on.

"On" exports to a sink this script runs on loopback (it answers every export at once),
so the figures are this project's cost, not a collector's. Ratios are on/off medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from bench.conductor import manifest
from bench.peers import ours_seconds
from orchestrator import tracing
from orchestrator.connection import open_client
from orchestrator.dispatch.manifests import dispatch_manifest
from orchestrator.keys import Keys
from orchestrator.logs import configure_logging
from orchestrator.registry import default_registry
from orchestrator.stack.redis_server import RedisServer


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def dispatch_rate(url: str, path: Path, lines: int, *, on: bool) -> float:
    if on:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        tracing.install(provider)
    namespace = f"tr{uuid.uuid4().hex[:6]}"

    async def dispatch() -> float:
        async with open_client(url) as redis:
            started = time.perf_counter()
            with tracing.span("send backlog:bench", kind="producer") if on else nullcontext():
                await dispatch_manifest(redis, Keys(namespace), path, "backlog:bench",
                                        default_registry(), batch=namespace)  # fmt: skip
            return time.perf_counter() - started

    try:
        return lines / anyio.run(dispatch)
    finally:
        tracing.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    configure_logging("warning")
    lines = 20_000 if options.quick else 100_000
    jobs = 2_000 if options.quick else 6_000
    seen: dict[str, list[float]] = {
        "dispatch off": [], "dispatch on": [], "end to end off": [], "end to end on": []
    }  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp) / "redis") as server,
        sink() as endpoint,
    ):
        path = manifest(Path(tmp) / "dispatch.jsonl", lines)
        for _ in range(options.runs):
            for on in (False, True):
                os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                if on:
                    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
                state = "on" if on else "off"
                seen[f"dispatch {state}"].append(dispatch_rate(server.url, path, lines, on=on))
                seconds = ours_seconds(server.url, Path(tmp), jobs)
                seen[f"end to end {state}"].append(jobs / seconds)
    rates = {name: statistics.median(values) for name, values in seen.items()}
    print(f"{lines:,}-line dispatch, {jobs:,} no-op jobs end to end, median of {options.runs}\n")
    print("| measure | tracing off | tracing on | on / off |\n|---|---|---|---|")
    for what in ("dispatch", "end to end"):
        off, on_ = rates[f"{what} off"], rates[f"{what} on"]
        print(f"| {what} (jobs/s) | {off:,.0f} | {on_:,.0f} | {on_ / off:.2f}x |")


if __name__ == "__main__":
    main()
