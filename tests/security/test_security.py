"""Security: what someone who can write to Redis, or to a manifest, cannot make us do.

- Nothing in Redis is ever unpickled: a pickle planted in a pool's arq queue (or on a
  backlog) runs no code, and the worker that meets it goes on working.
- The whole stack runs as a least-privilege Redis ACL user, with the default user
  locked; wrong credentials are one line, exit 69, and never echo the password.
- `rediss://` (TLS) URLs are accepted, and failing to reach one is a clean error.
- A task outside the registry is refused at dispatch and dead-lettered at run time,
  and the module it names is never imported.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError, NoPermissionError

from orchestrator.arq_jobs import JOB_KEY_PREFIX
from orchestrator.connection import open_pool
from orchestrator.keys import Keys
from orchestrator.settings import load_settings
from orchestrator.stack.redis_server import RedisServer, free_port
from tests.conftest import CliRunner, StackFactory
from tests.live_stack import Stack, write_manifest

SECRET = "s3cr3t-ACL-pw"  # distinctive, so its absence from any output means something
ADMIN_SECRET = "adm1n-pw-for-tests"
WRONG = "Wr0ng-pw-9f1c"
# The least-privilege user the stack runs as. Keys: ours (one hash tag) and arq's job
# keys; channels: ours. `-@dangerous` removes FLUSHALL, KEYS, CONFIG, DEBUG, … but also
# two commands we need: INFO (the server version check in `connect`, and arq's start-up
# log) and, on Redis 6.2 where CLIENT is one command, CLIENT SETNAME (redis-py names
# every connection). Redis 7 already allows CLIENT SETNAME under -@dangerous.
ACL_RULE = [
    "reset", "on", f">{SECRET}",
    "~{orc}:*", "~arq:*",
    "resetchannels", "&{orc}:*",
    "+@all", "-@dangerous", "+info", "+client|setname",
]  # fmt: skip
# A sample of what the rule withholds: other keys and channels, and the admin commands.
WITHHELD = [
    ("GET", "other"), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST"),
    ("PUBLISH", "elsewhere", "x"), ("FLUSHDB",), ("CLIENT", "LIST"), ("SHUTDOWN",),
]  # fmt: skip
GOOD_LINE = {"task": "system.echo", "args": ["after"]}


# --- pickle ---------------------------------------------------------------------------


def plant(marker: str) -> None:
    """What the pickles below would run when loaded: leave a mark."""
    Path(marker).write_text("unpickled")


class SystemCall:
    """Unpickles into `os.system("touch MARKER")`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class PlantCall:
    """Unpickles into `plant(MARKER)` (a module-level function, imported on load)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (plant, (str(self.marker),))


def arq_pickle(function: str, argument: object) -> bytes:
    """A job as arq's default (pickle) serializer writes it, carrying `argument`."""
    job = {"f": function, "a": (argument,), "k": {}, "t": 1, "et": int(time.time() * 1000)}
    return pickle.dumps(job)


def test_a_pickle_in_a_pool_queue_is_never_unpickled(stack: StackFactory, tmp_path: Path) -> None:
    run = stack()
    markers = [tmp_path / f"marker-{n}" for n in range(4)]
    planted = {
        "pickle-system": arq_pickle("system.echo", SystemCall(markers[0])),
        "pickle-plant": arq_pickle("system.echo", PlantCall(markers[1])),
        "pickle-bare": pickle.dumps(SystemCall(markers[2])),
        # JSON, as our workers read it, but naming a function outside the registry.
        "json-os-system": orjson.dumps(
            {"f": "os.system", "a": [f"touch {markers[3]}"], "k": {}, "t": 1, "et": 1}
        ),
        # JSON naming a registry task, with an argument that is no envelope.
        "json-not-envelope": orjson.dumps({"f": "system.echo", "a": ["x"], "k": {}, "t": 1}),
    }
    queue = run.keys.pool_queue("metal")
    for name, payload in planted.items():
        arq_id = run.keys.arq_job_id(name)
        run.redis.set(JOB_KEY_PREFIX + arq_id, payload, px=60_000)
        run.redis.zadd(queue, {arq_id: int(time.time() * 1000)})

    worker = run.worker("metal", 1)
    run.wait_for(lambda: run.redis.zcard(queue) == 0, "the worker to take every planted job")
    time.sleep(0.5)  # a shell started by os.system would have touched its file by now
    assert [m for m in markers if m.exists()] == []
    assert worker.poll() is None

    # A pickle pushed onto a backlog fares no better: dead-lettered, never loaded.
    run.conductor()
    run.redis.rpush(run.keys.backlog("backlog:default"), pickle.dumps(PlantCall(markers[1])))
    run.wait_for(lambda: run.redis.llen(run.keys.dead) == 1, "the pickle dead-lettered")
    (dead,) = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    assert dead["reason"] == "invalid_payload"

    run.dispatch(write_manifest(tmp_path / "after_pickle_01.jsonl", [GOOD_LINE]))
    (receipt,) = run.wait_for_receipts("after_pickle_01", 1)
    assert (receipt["status"], receipt["result"]) == ("succeeded", ["after"])
    assert worker.poll() is None
    assert [m for m in markers if m.exists()] == []


# --- a least-privilege ACL user ----------------------------------------------------------


NARROW_RULE = ["reset", "on", f">{SECRET}", "~other:*", "+@all", "-@dangerous", "+info",
               "+client|setname"]  # fmt: skip


def command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py stub


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server whose only usable users are `orc` (ACL_RULE) and an admin
    default user with a password: an unauthenticated client can do nothing."""
    with RedisServer(tmp_path / "acl-redis", port=free_port()) as server:
        admin = redis.Redis(port=server.port)
        command(admin, "ACL", "SETUSER", "orc", *ACL_RULE)
        command(admin, "ACL", "SETUSER", "narrow", *NARROW_RULE)
        command(admin, "ACL", "SETUSER", "default", "resetpass", f">{ADMIN_SECRET}")
        admin.close()
        yield server


def url(
    server: RedisServer, user: str = "orc", password: str = SECRET, scheme: str = "redis"
) -> str:
    return f"{scheme}://{user}:{password}@127.0.0.1:{server.port}/0"


def test_the_stack_runs_end_to_end_as_a_least_privilege_acl_user(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    with pytest.raises(AuthenticationError):  # the default user is locked
        redis.Redis(port=acl_server.port).ping()
    run = Stack(url(acl_server), "orc", tmp_path, {})
    try:
        run.worker("metal", 2)
        run.worker("cloud", 2)
        run.conductor()
        lines = [{"task": "system.sleep", "args": [0.3]} for _ in range(6)]
        run.dispatch(write_manifest(tmp_path / "acl_01.jsonl", lines))
        receipts = run.wait_for_receipts("acl_01", 6)
        assert {r["status"] for r in receipts} == {"succeeded"}
        assert {r["pool"] for r in receipts} == {"metal", "cloud"}  # metal full, spilled
        admin = redis.Redis(port=acl_server.port, password=ADMIN_SECRET, client_name="admin")
        users = {c["name"]: c["user"] for c in admin.client_list() if c["name"] != "admin"}
        admin.close()
        assert {"worker-metal", "arq-metal", "worker-cloud", "orchestrator-conductor"} <= set(users)
        assert set(users.values()) == {"orc"}  # every process of the stack, and this test
        # What the rule withholds, the user really cannot do.
        for denied in WITHHELD:
            with pytest.raises(NoPermissionError):
                command(run.redis, *denied)
    finally:
        run.stop()
    for log in tmp_path.glob("*.log"):  # redis-py drops the NOPERM prefix: look for both
        text = log.read_text()
        assert [n for n in (SECRET, "NOPERM", "no permissions") if n in text] == [], log


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        pytest.param("orc", WRONG, "refused the credentials", id="wrong-password"),
        pytest.param("nobody", SECRET, "refused the credentials", id="unknown-user"),
        pytest.param(
            "narrow",
            SECRET,
            "denied a command",
            id="user-without-our-keys",
        ),
    ],
)
def test_refused_credentials_are_one_line_exit_69_without_the_password(
    acl_server: RedisServer,
    run_cli: CliRunner,
    tmp_path: Path,
    user: str,
    password: str,
    message: str,
) -> None:
    path = write_manifest(tmp_path / "denied_01.jsonl", [GOOD_LINE])
    given = url(acl_server, user, password)
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", given)
    assert result.code == 69, result.err
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    shown = f"redis://{user}:***@127.0.0.1:{acl_server.port}/0"
    assert result.err.startswith(f"orchestrator: error: Redis at {shown} {message}"), result.err
    assert password not in result.err
    assert "Traceback" not in result.err


def test_no_credentials_at_all_is_one_line_exit_69(
    acl_server: RedisServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    path = write_manifest(tmp_path / "anonymous_01.jsonl", [GOOD_LINE])
    plain = f"redis://127.0.0.1:{acl_server.port}/0"
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", plain)
    assert result.code == 69, result.err
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"orchestrator: error: Redis at {plain} "), result.err


# --- TLS URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redis_url",
    [
        "rediss://127.0.0.1:6380/0",
        f"rediss://orc:{SECRET}@redis.example:6380/0",
        "rediss://redis.example:6380/0?ssl_cert_reqs=required",
        "unix:///run/redis/redis.sock?db=0",
    ],
)
def test_tls_and_unix_urls_are_accepted_by_settings_and_connections(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url)
    assert settings.redis_url == redis_url
    pool = open_pool(redis_url)
    assert issubclass(pool.connection_class, SSLConnection) == redis_url.startswith("rediss:")


def test_unreachable_tls_redis_is_one_line_and_exit_69(run_cli: CliRunner, tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "tls_01.jsonl", [GOOD_LINE])
    port = free_port()  # nothing listens there
    given = f"rediss://orc:{SECRET}@127.0.0.1:{port}/0"
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", given)
    assert result.code == 69, result.err
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith(
        f"orchestrator: error: cannot reach Redis at rediss://orc:***@127.0.0.1:{port}/0"
    ), result.err
    assert SECRET not in result.err


def test_tls_url_to_a_plain_text_server_is_one_line_and_exit_69(
    acl_server: RedisServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    path = write_manifest(tmp_path / "tls_02.jsonl", [GOOD_LINE])
    given = url(acl_server, scheme="rediss")
    started = time.monotonic()
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", given)
    assert result.code == 69, result.err
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("orchestrator: error: cannot reach Redis at rediss://orc:***@")
    assert SECRET not in result.err
    assert time.monotonic() - started < 10


# --- the task allow-list -------------------------------------------------------------


@pytest.fixture
def planted_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where `tests.security.planted` writes if anything (here or in a child) imports it."""
    marker = tmp_path / "planted-imported"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    sys.modules.pop("tests.security.planted", None)
    return marker


@pytest.mark.parametrize(
    "task", ["os.system", "tests.security.planted.run", "builtins.exec", "subprocess.run"]
)
def test_a_task_outside_the_registry_is_refused_at_dispatch(
    run_cli: CliRunner,
    sync_redis: redis.Redis,
    keys: Keys,
    tmp_path: Path,
    planted_marker: Path,
    task: str,
) -> None:
    path = write_manifest(
        tmp_path / "outside_01.jsonl", [GOOD_LINE, {"task": task, "args": ["touch /tmp/x"]}]
    )
    result = run_cli("dispatch", str(path), "--backlog", "stress")
    assert result.code == 2
    assert result.err.startswith(f"orchestrator: error: {path}:2: task: unknown task {task!r}")
    assert result.err.count("\n") == 1
    assert sync_redis.llen(keys.backlog("backlog:stress")) == 0
    assert "tests.security.planted" not in sys.modules
    assert not planted_marker.exists()


def test_a_task_outside_the_registry_is_never_imported_or_run_at_run_time(
    stack: StackFactory, tmp_path: Path, planted_marker: Path
) -> None:
    """Names no worker announces wait for one (or, not being task names, are dead-lettered);
    none is ever imported or run."""
    run = stack()  # its processes inherit PLANTED_MARKER
    run.worker("metal", 1)
    conductor = run.conductor()
    touched = tmp_path / "touched"
    names = ["os.system", "tests.security.planted.run", "tests.security.planted", "eval"]
    for n, task in enumerate(names):
        envelope = {"id": f"outside:{n}", "batch": "outside", "task": task,
                    "args": [f"touch {touched}"], "dispatched_at": time.time()}  # fmt: skip
        run.redis.rpush(run.keys.backlog("backlog:default"), orjson.dumps(envelope))
    waiting = names[:3]
    run.wait_for(
        lambda: (
            run.redis.llen(run.keys.dead) == 1
            and all(run.redis.llen(run.keys.no_worker(task)) == 1 for task in waiting)
        ),
        "three jobs waiting for a worker and one dead letter",
    )
    dead = [orjson.loads(raw) for raw in run.redis.lrange(run.keys.dead, 0, -1)]
    assert [(d["job_id"], d["reason"]) for d in dead] == [("outside:3", "invalid_payload")]
    assert "is not a task name" in dead[0]["error"]
    assert set(run.redis.zrange(run.keys.no_worker_tasks, 0, -1)) == {t.encode() for t in waiting}
    run.dispatch(write_manifest(tmp_path / "inside_01.jsonl", [GOOD_LINE]))
    assert run.wait_for_receipts("inside_01", 1)[0]["status"] == "succeeded"
    assert run.receipts("outside") == []
    assert not touched.exists()
    assert not planted_marker.exists()
    assert conductor.poll() is None


README_RULE = re.compile(r"ACL SETUSER (?P<user>\S+) (?P<rule>[^`\n]+)")


def test_the_acl_rule_the_readme_gives_operators_works(
    acl_server: RedisServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = README_RULE.search(readme)
    assert found, "the README no longer shows an ACL SETUSER rule"
    user = found["user"]
    rule = [token.replace("secret", SECRET) for token in found["rule"].split()]
    admin = redis.Redis(port=acl_server.port, password=ADMIN_SECRET)
    command(admin, "ACL", "SETUSER", user, *rule)
    admin.close()
    path = write_manifest(tmp_path / "readme_01.jsonl", [GOOD_LINE])
    given = url(acl_server, user)
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--redis-url", given)
    assert result.code == 0, result.err
