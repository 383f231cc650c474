"""Redis URLs of every kind the settings accept, and servers that are not Redis at all."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from orchestrator.keys import Keys
from orchestrator.stack.redis_server import RedisServer
from tests.conftest import CliRunner

GOOD = '{"task": "system.echo", "args": ["hi"]}'


@pytest.fixture(scope="module")
def unix_socket_server() -> Iterator[Path]:
    """A private redis-server that also listens on a unix socket; yields the socket."""
    # sun_path holds about 107 bytes: pytest's tmp_path is often longer than that.
    directory = Path(tempfile.mkdtemp(prefix="orc", dir="/tmp"))
    path = directory / "redis.sock"
    extra = ("--unixsocket", str(path), "--unixsocketperm", "700")
    try:
        with RedisServer(directory / "data", extra=extra):
            yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_unix_socket_url_works_for_dispatch_and_status(
    run_cli: CliRunner,
    unix_socket_server: Path,
    monkeypatch: pytest.MonkeyPatch,
    keys: Keys,
    tmp_path: Path,
) -> None:
    """`REDIS_URL=unix:///...` reaches Redis: no TCP-only option is passed to the socket."""
    monkeypatch.setenv("REDIS_URL", f"unix://{unix_socket_server}?db=0")
    manifest = tmp_path / "unix_01.jsonl"
    manifest.write_text(GOOD + "\n")
    dispatched = run_cli("dispatch", str(manifest), "--backlog", "stress")
    assert (dispatched.code, dispatched.err) == (0, "")
    assert dispatched.out.startswith("queued 1 job")
    status = run_cli("status", "--json")
    assert status.code == 0, status.err
    assert "backlog:stress" in orjson.dumps(orjson.loads(status.out)).decode()
    direct = redis.Redis(unix_socket_path=str(unix_socket_server))
    try:
        assert direct.llen(keys.backlog("backlog:stress")) == 1
    finally:
        direct.close()


def serve_junk(reply: bytes, *, per_command: bool = False) -> tuple[int, socket.socket]:
    """A TCP server on a free loopback port that answers every read with `reply`, or
    with one `reply` per command the read holds, or with nothing when it is empty."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by the test
                return
            with client:
                try:
                    while data := client.recv(65536):
                        commands = data.count(b"\r\n*") + data.startswith(b"*")
                        if reply:
                            client.sendall(reply * commands if per_command else reply)
                except OSError:
                    pass

    threading.Thread(target=answer, daemon=True).start()
    return listener.getsockname()[1], listener


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", id="http"),
        pytest.param(b"-ERR unknown command\r\n", id="error-reply"),
        pytest.param(b"+OK\r\n", id="ok-to-everything"),
    ],
)
@pytest.mark.parametrize("command", [("status", "--json"), ("dlq", "list")])
def test_a_server_that_is_not_redis_is_one_line_exit_69(
    run_cli: CliRunner, reply: bytes, command: tuple[str, ...]
) -> None:
    """A URL pointing at something that does not speak Redis ends in one line naming it."""
    port, listener = serve_junk(reply, per_command=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        result = run_cli(*command, "--redis-url", url)
    finally:
        listener.close()
    assert result.code == 69, result.err
    assert result.err.startswith("orchestrator: error: "), result.err
    assert url in result.err
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err


# The CLI in a child process with a short handshake timeout: a hang fails the test
# through `timeout` instead of stalling the suite.
SILENT_CLI = """
import sys
import orchestrator.connection
from orchestrator import cli
orchestrator.connection.HANDSHAKE_TIMEOUT = 0.5
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_server_that_accepts_but_never_answers_is_one_line_exit_69(tmp_path: Path) -> None:
    """A port that takes the connection and stays silent must not hang the command."""
    port, listener = serve_junk(b"")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SILENT_CLI, "status", "--json", "--redis-url", url],
            capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path,
        )  # fmt: skip
    finally:
        listener.close()
    assert done.returncode == 69, done.stderr
    assert done.stderr == (
        f"orchestrator: error: {url} does not answer like a Redis server (no reply within 0.5 s)\n"
    )
