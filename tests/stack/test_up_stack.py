"""`orchestrator up` as a new user meets it: the other commands find its stack, a second
`up` refuses, a stranger's Redis is never taken for its own, and Ctrl-C — sent by a
terminal to the whole foreground process group — stops it in order, losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis

from orchestrator.stack.record import StackRecord, read_record
from orchestrator.stack.redis_server import RedisServer, embedded_redis_server, free_port
from tests.conftest import CliRunner
from tests.dashboard_action import assert_action_needs_the_token
from tests.live_stack import REPO, write_manifest
from tests.stack.test_up import receipts, wait_until

GRACE = 5.0


def user_env(**extra: str) -> dict[str, str]:
    """A shell with no Redis settings at all, as a new user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "ORCHESTRATOR_"))}
    if "ORCHESTRATOR_REDIS_SERVER" in os.environ:
        env["ORCHESTRATOR_REDIS_SERVER"] = os.environ["ORCHESTRATOR_REDIS_SERVER"]
    return env | {
        "PYTHONPATH": str(REPO),
        "ORCHESTRATOR_HEARTBEAT_INTERVAL": "0.5",
        "ORCHESTRATOR_GRACE_PERIOD": str(GRACE),
        "ORCHESTRATOR_LOG_FORMAT": "json",
        **extra,
    }


def start_up(cwd: Path, *args: str, log: str = "up.log") -> subprocess.Popen[bytes]:
    """`up` in a session of its own, so the test can signal its group as a terminal does."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "up", "--redis-port", str(free_port()), *args],
        env=user_env(), cwd=cwd, stdout=(cwd / log).open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def command(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=user_env(), cwd=cwd, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def ready(cwd: Path, pools: tuple[str, ...] = ("metal", "cloud")) -> redis.Redis:
    """A client on the stack's Redis once each of `pools` has a live worker."""

    def running() -> StackRecord | None:  # a stopped stack leaves its record behind
        record = read_record(cwd / "data")
        return record if record is not None and record.stopped_at is None else None

    wait_until(running)
    record = running()
    assert record is not None
    client = redis.Redis.from_url(record.redis_url)
    wait_until(lambda: all(client.scard(f"{{orc}}:workers:{pool}") for pool in pools))
    return client


def stop(up: subprocess.Popen[bytes]) -> None:
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)


def test_commands_in_another_shell_find_the_stack_up_started(tmp_path: Path) -> None:
    """dispatch, status and verify run in the stack `up` recorded here, not on 6379."""
    up = start_up(tmp_path, "--metal", "2", "--cloud", "2")
    try:
        client = ready(tmp_path)
        manifest = write_manifest(
            tmp_path / "found_01.jsonl", [{"task": "system.echo", "args": [1]}]
        )
        dispatched = command(tmp_path, "dispatch", str(manifest), "--backlog", "default")
        assert dispatched.returncode == 0, dispatched.stderr
        wait_until(lambda: len(receipts(client, "found_01")) == 1)
        status = command(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        assert "from ./data/stack.json" in status.stdout
        verified = command(tmp_path, "verify", str(manifest))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        client.close()
    finally:
        stop(up)
    assert up.returncode == 0
    record = read_record(tmp_path / "data")
    assert record is not None
    assert record.stopped_at is not None


def test_after_up_stopped_commands_say_so_instead_of_using_the_default_redis(
    tmp_path: Path,
) -> None:
    """A clean stop leaves the record marked stopped: a later command is one line, exit 69,
    never a quiet fallback to redis://127.0.0.1:6379 (somebody else's Redis, perhaps)."""
    up = start_up(tmp_path, "--metal", "1", "--cloud", "1")
    ready(tmp_path).close()
    stop(up)
    assert up.returncode == 0
    status = command(tmp_path, "status")
    assert status.returncode == 69
    assert status.stderr.count("\n") == 1
    assert "./data/stack.json is not running" in status.stderr
    assert ", stopped " in status.stderr
    again = start_up(tmp_path, "--metal", "1", "--cloud", "1", log="up-again.log")
    try:
        ready(tmp_path).close()
        assert command(tmp_path, "status").returncode == 0
    finally:
        stop(again)


def test_a_recorded_stack_that_died_is_one_line_not_a_bare_exit_69(
    tmp_path: Path, run_cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack.json left by an `up` that was killed names it, and nothing is queued."""
    monkeypatch.delenv("REDIS_URL")
    (tmp_path / "data").mkdir()
    record = {"redis_url": "redis://127.0.0.1:6399/0", "up_pid": 4242, "started_at": time.time(),
              "data_dir": str(tmp_path / "data")}  # fmt: skip
    (tmp_path / "data" / "stack.json").write_bytes(orjson.dumps(record))
    manifest = write_manifest(tmp_path / "m_01.jsonl", [{"task": "system.echo", "args": [1]}])
    result = run_cli("dispatch", str(manifest), "--backlog", "default")
    assert result.code == 69
    assert result.err.count("\n") == 1
    assert "./data/stack.json is not running" in result.err
    assert "pid 4242" in result.err
    assert "orchestrator up" in result.err


def test_an_explicit_url_beats_the_recorded_stack(
    tmp_path: Path, run_cli: CliRunner, redis_url: str, namespace: str
) -> None:
    """REDIS_URL wins over a stack record (even a dead one), and status says so."""
    (tmp_path / "data").mkdir()
    record = {"redis_url": "redis://127.0.0.1:1/0", "up_pid": 4242, "started_at": time.time(),
              "data_dir": str(tmp_path / "data")}  # fmt: skip
    (tmp_path / "data" / "stack.json").write_bytes(orjson.dumps(record))
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    assert orjson.loads(result.out)["redis"]["origin"] == "REDIS_URL"


def test_a_second_up_on_the_same_data_dir_refuses_naming_the_first(tmp_path: Path) -> None:
    """One line naming the running stack, exit 2, and the first stack is untouched."""
    up = start_up(tmp_path, "--metal", "1", "--cloud", "1")
    try:
        client = ready(tmp_path)
        second = subprocess.run(
            [sys.executable, "-m", "orchestrator", "up"],
            env=user_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert "already running on ./data" in second.stderr
        assert f"pid {up.pid}" in second.stderr
        assert up.poll() is None
        assert client.ping()
        client.close()
    finally:
        stop(up)


def test_up_never_takes_a_strangers_redis_on_its_port_for_its_own(tmp_path: Path) -> None:
    """With another Redis on the port, `up` fails in one line instead of using its data."""
    with RedisServer(tmp_path / "stranger") as stranger:
        assert stranger.port is not None
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "up", "--redis-port", str(stranger.port)],
            env=user_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 69, done.stdout + done.stderr
        assert "redis_started" not in done.stdout
        assert done.stderr.strip().startswith("orchestrator: error: the embedded Redis could not")
        assert redis.Redis(port=stranger.port).dbsize() == 0


def sleepers(path: Path, seconds: float, count: int = 8) -> Path:
    return write_manifest(path, [{"task": "system.sleep", "args": [seconds]}] * count)


def running(client: redis.Redis) -> int:
    return sum(
        int(client.hget(key, "running") or 0)
        for key in client.scan_iter(match="\\{orc\\}:worker:*")
    )


def assert_no_traceback(tmp_path: Path) -> None:
    text = "".join(log.read_text(errors="replace") for log in tmp_path.glob("up*.log"))
    assert "Traceback" not in text
    assert '"exception"' not in text


def ctrl_c_twice(up: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """Two SIGINTs to `up`'s group, as a hurried person: it exits 0 well before a drain
    of GRACE could end, without a traceback."""
    os.killpg(up.pid, signal.SIGINT)
    time.sleep(0.5)
    interrupted = time.monotonic()
    os.killpg(up.pid, signal.SIGINT)
    assert up.wait(15) == 0
    assert time.monotonic() - interrupted < GRACE - 1.5  # the drain would have waited GRACE
    assert_no_traceback(tmp_path)


def persisted_receipts(tmp_path: Path, batch: str) -> list[dict[str, object]]:
    """The receipts the stopped stack's append-only file kept (Redis stopped last)."""
    data = tmp_path / "data" / "redis"
    with RedisServer(data, appendonly=True, executable=embedded_redis_server()) as server:
        client = redis.Redis(port=server.port)
        found = receipts(client, batch)
        client.close()
    return found


def finish_after_restart(tmp_path: Path, batch: str, before: dict[str, dict[str, object]]) -> None:
    """A new `up` runs what was left: every job succeeded once, none ran twice."""
    up = start_up(tmp_path, "--metal", "4", "--cloud", "8", log="up-again.log")
    try:
        client = ready(tmp_path)
        wait_until(lambda: len(receipts(client, batch)) == 8, timeout=60)
        after = {str(r["job_id"]): r for r in receipts(client, batch)}
        client.close()
    finally:
        stop(up)
    assert {r["status"] for r in after.values()} == {"succeeded"}
    assert {r["attempt"] for r in after.values()} == {1}
    for job_id, receipt in before.items():
        assert after[job_id]["started_at"] == receipt["started_at"], "a finished job ran again"


def test_ctrl_c_stops_up_in_order_and_running_jobs_finish(tmp_path: Path) -> None:
    """SIGINT to the process group: exit 0 within grace + 5 s, receipts written, no
    traceback; whatever had not started runs after the next `up`, nothing twice."""
    up = start_up(tmp_path, "--metal", "4", "--cloud", "8")
    client = ready(tmp_path)
    manifest = sleepers(tmp_path / "calm_01.jsonl", 2.0)
    assert command(tmp_path, "dispatch", str(manifest), "--backlog", "default").returncode == 0
    wait_until(lambda: running(client) == 8)
    interrupted = time.monotonic()
    os.killpg(up.pid, signal.SIGINT)
    assert up.wait(GRACE + 5) == 0
    assert time.monotonic() - interrupted < GRACE + 5
    assert_no_traceback(tmp_path)
    client.close()
    before = {str(r["job_id"]): r for r in persisted_receipts(tmp_path, "calm_01")}
    assert len(before) == 8
    assert {r["status"] for r in before.values()} == {"succeeded"}
    finish_after_restart(tmp_path, "calm_01", before)


# It times the stop against the grace period: alone on the machine, after the parallel
# pass (under the parallel pass's load one CI run took 5.5 s, the conductor slow to stop).
@pytest.mark.serial
def test_a_second_ctrl_c_stops_at_once_and_running_jobs_go_back_in_line(tmp_path: Path) -> None:
    """Two SIGINTs: exit 0 well before the jobs could finish, no failed receipt, and the
    next `up` runs each job once more as its first attempt."""
    up = start_up(tmp_path, "--metal", "4", "--cloud", "8")
    client = ready(tmp_path)
    manifest = sleepers(tmp_path / "hurry_01.jsonl", 10.0)
    assert command(tmp_path, "dispatch", str(manifest), "--backlog", "default").returncode == 0
    wait_until(lambda: running(client) == 8)
    ctrl_c_twice(up, tmp_path)
    client.close()
    assert persisted_receipts(tmp_path, "hurry_01") == []
    finish_after_restart(tmp_path, "hurry_01", {})


# Timed against the grace period too: alone on the machine, after the parallel pass.
@pytest.mark.serial
def test_a_second_ctrl_c_reaches_the_workers_the_scaler_launched(tmp_path: Path) -> None:
    """With elastic cloud, the workers the conductor's scaler launched hand their jobs
    back at the second SIGINT as `up`'s own workers do (they once ran every job to its
    end, 14-28 s): exit well before the drain could end, and nothing lost."""
    up = start_up(tmp_path, "--metal", "4", "--cloud", "4", "--elastic")
    client = ready(tmp_path, pools=("metal",))  # cloud has no worker until the spill
    manifest = sleepers(tmp_path / "elastic_01.jsonl", 12.0)
    assert command(tmp_path, "dispatch", str(manifest), "--backlog", "default").returncode == 0
    wait_until(lambda: running(client) == 8, timeout=30)
    assert client.scard("{orc}:workers:cloud"), "the scaler launched no cloud worker"
    ctrl_c_twice(up, tmp_path)
    client.close()
    assert persisted_receipts(tmp_path, "elastic_01") == []
    finish_after_restart(tmp_path, "elastic_01", {})


def test_up_starts_the_dashboard_and_prints_its_url_with_the_token(tmp_path: Path) -> None:
    """The URL in `up`'s ready line opens the dashboard of this stack, and the token in it
    is the one its actions take."""
    import urllib.error
    import urllib.request

    up = start_up(tmp_path, "--metal", "1", "--cloud", "1", "--web-port", str(free_port()))
    try:
        ready(tmp_path).close()
        lines = [
            orjson.loads(x)
            for x in (tmp_path / "up.log").read_bytes().splitlines()
            if x.startswith(b"{")
        ]
        (url,) = [line["web"] for line in lines if line.get("event") == "ready"]
        base, token = url.split("#token=")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(base + "api/status", timeout=2) as reply:
                    return bool(orjson.loads(reply.read())["pools"][0]["workers"])
            except OSError:
                return False

        wait_until(answers)
        with urllib.request.urlopen(base + "api/status", timeout=2) as reply:
            origin = orjson.loads(reply.read())["redis"]["origin"]
        assert origin == "orchestrator up, its embedded Redis"  # not its REDIS_URL
        assert_action_needs_the_token(base + "api/backlogs/default/pause", token, timeout=5)
        assert "backlog:default" in command(tmp_path, "status", "--json").stdout
        paused = orjson.loads(command(tmp_path, "status", "--json").stdout)["backlogs"][0]
        assert paused["paused_at"] is not None
    finally:
        stop(up)
    assert up.returncode == 0


def wait_for_event(log: Path, event: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and (record := orjson.loads(line))["event"] == event:
                return cast(dict[str, Any], record)
        return None

    wait_until(found)
    record = found()
    assert record is not None
    return record


def test_two_ups_started_at_once_each_get_a_redis_and_a_dashboard(tmp_path: Path) -> None:
    """Neither given a port: both look at the default ports at the same moment, one gets
    each, the other any free one — and neither stack loses a child to the race (the
    dashboard's socket is bound by `up` itself before its process starts)."""
    homes = [tmp_path / "one", tmp_path / "two"]
    for home in homes:
        home.mkdir()
    args = [sys.executable, "-m", "orchestrator", "up", "--metal", "1", "--cloud", "1"]
    ups = [
        subprocess.Popen(
            args, env=user_env(), cwd=home, stdout=(home / "up.log").open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        for home in homes
    ]  # fmt: skip
    try:
        clients = [ready(home) for home in homes]
        readies = [wait_for_event(home / "up.log", "ready") for home in homes]
        urls = [(ready["redis"], ready["web"].split("#")[0]) for ready in readies]
        assert urls[0][0] != urls[1][0], urls
        assert urls[0][1] != urls[1][1], urls
        for (_, web), up in zip(urls, ups, strict=True):
            with urllib.request.urlopen(web + "healthz", timeout=10) as reply:
                assert reply.status == 200
            assert up.poll() is None
        for client in clients:
            client.close()
    finally:
        for up in ups:
            stop(up)
    assert [up.returncode for up in ups] == [0, 0]


def test_web_on_a_descriptor_that_is_not_a_listening_socket_is_one_line(tmp_path: Path) -> None:
    done = command(tmp_path, "web", "--fd", "0", "--port", "9")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--fd 0 is not" in done.stderr


def test_up_with_an_unreachable_redis_url_says_so_in_one_line_before_anything_starts(
    tmp_path: Path,
) -> None:
    """Not `ready` first and three failing children after: one line, exit 69 as every other
    command, and nothing started (no stack recorded)."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "up", "--no-web"],
        env=user_env(REDIS_URL="redis://127.0.0.1:1/0", ORCHESTRATOR_LOG_FORMAT="console"),
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 69, done.stdout + done.stderr
    assert "ready" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("orchestrator: error: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "stack.json").exists()


def test_up_prints_the_dashboard_url_with_its_token_and_keeps_the_token_across_restarts(
    tmp_path: Path,
) -> None:
    """A plain `dashboard: …#token=…` line (not only inside a JSON log line), and the same
    token after a restart, so a tab left open still acts."""

    def dashboard_line() -> str:
        def printed() -> str | None:
            for line in (tmp_path / "up.log").read_text().splitlines():
                if line.startswith("dashboard: ") and "#token=" in line:
                    return line
            return None

        wait_until(printed)
        line = printed()
        assert line is not None
        return line

    first = start_up(tmp_path, "--metal", "1", "--cloud", "1", "--web-port", str(free_port()))
    try:
        token = dashboard_line().split("#token=")[1]
    finally:
        stop(first)
    kept = tmp_path / "data" / "web-token"
    assert kept.read_text().strip() == token
    assert kept.stat().st_mode & 0o777 == 0o600
    (tmp_path / "up.log").write_text("")
    again = start_up(tmp_path, "--metal", "1", "--cloud", "1", "--web-port", str(free_port()))
    try:
        assert dashboard_line().split("#token=")[1] == token
    finally:
        stop(again)


def test_up_says_how_each_pool_is_served_and_warns_of_one_nothing_serves(tmp_path: Path) -> None:
    """A `[[pools]]` list in orchestrator.toml replaces the defaults; a pool `up` starts
    no worker for, with no scaler, is said at start, not discovered by jobs that wait."""
    (tmp_path / "orchestrator.toml").write_text(
        '[[pools]]\nname = "metal"\norder = 0\n\n[[pools]]\nname = "cloud"\norder = 1\n\n'
        '[[pools]]\nname = "gpu"\norder = 2\n'
    )
    up = start_up(tmp_path, "--metal", "1", "--cloud", "1", "--no-web")
    try:
        pools = wait_for_event(tmp_path / "up.log", "pools")
        unserved = wait_for_event(tmp_path / "up.log", "pool_unserved")
    finally:
        stop(up)
    assert (pools["metal"], pools["cloud"], pools["gpu"]) == (
        "a worker of 1 slot",
        "a worker of 1 slot",
        "nothing",
    )
    assert unserved["pool"] == "gpu"
    assert "orchestrator worker --pool gpu" in unserved["hint"]
