"""Real redundant Redis for the tests: a master, a replica and three sentinels
(`redis-server --sentinel`), and a Redis Cluster of three masters (`redis-server
--cluster-enabled yes`, joined by `redis-cli --cluster create`). Every process is
started here, on free loopback ports, and stopped at the end."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.sentinel
from redis.crc import key_slot

from orchestrator.stack.redis_server import RedisServer, find_redis_server, free_port
from tests.live_stack import Stack

SERVICE = "mymaster"


def until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll `condition` (errors count as not yet) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def until_all_succeeded(run: Stack, batch: str, count: int, where: str, timeout: float) -> None:
    """Until `count` receipts of `batch` say succeeded (errors while Redis moves count as
    not yet), read through the test's client of the new master."""

    def settled() -> bool:
        done = [r for r in run.receipts(batch) if r["status"] == "succeeded"]
        return len(done) == count

    until(settled, f"all {count} jobs succeeded {where}", timeout)


class SentinelSet:
    """A master, one replica and three sentinels watching them (quorum 2, a master
    taken as down after 1 s without a reply)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = RedisServer(directory / "master")
        self.replica: RedisServer | None = None
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica = RedisServer(
            self.directory / "replica", extra=("--replicaof", "127.0.0.1", str(self.master.port))
        ).start()
        replica = redis.Redis(port=self.replica.port)
        until(lambda: replica.info("replication")["master_link_status"] == "up", "the replica")
        replica.close()
        for number in range(3):
            port = free_port()
            config = self.directory / f"sentinel-{number}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            process = subprocess.Popen(
                [str(find_redis_server()), str(config), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            self.sentinels.append((port, process))
        for port, _ in self.sentinels:
            sentinel = redis.Redis(port=port, decode_responses=True)
            until(
                lambda s=sentinel: (
                    s.sentinel_slaves(SERVICE) and len(s.sentinel_sentinels(SERVICE)) == 2
                ),
                "each sentinel to know the replica and the other sentinels",
            )
            sentinel.close()
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def master_port(self) -> int | None:
        """The master's port as a sentinel that answers says it, or None."""
        for port, _ in self.sentinels:
            try:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    address = sentinel.sentinel_get_master_addr_by_name(SERVICE)
            except (redis.RedisError, OSError):
                continue
            if address:
                return int(address[1])
        return None

    def kill_master(self) -> tuple[float, float]:
        """SIGKILL the master; return when it was killed and when a sentinel first named
        the replica master (wall clock, as receipts' times are)."""
        assert self.replica is not None
        killed = time.time()
        self.master.kill()
        until(lambda: self.master_port() == self.replica.port, "a promotion", 60)
        return killed, time.time()

    def stack(self, namespace: str, directory: Path, settings: dict[str, Any]) -> Stack:
        """A stack whose every process and command knows only the sentinels' URL; the
        test's own client follows the master too."""
        run = Stack(self.master.url, namespace, directory, settings)
        run.env["REDIS_URL"] = self.url
        run.redis.close()
        run.redis = self.client()
        return run

    def client(self) -> redis.Redis:
        """A test's own client of whichever server is master now."""
        ports = [("127.0.0.1", port) for port, _ in self.sentinels]
        manager = redis.sentinel.Sentinel(ports, socket_timeout=1)  # type: ignore[no-untyped-call]
        client: redis.Redis = manager.master_for(SERVICE, socket_timeout=2)  # type: ignore[no-untyped-call]
        return client

    def stop(self) -> None:
        for _, process in self.sentinels:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(10)
        for server in (self.replica, self.master):
            if server is not None:
                server.stop()


class Cluster:
    """Three masters (and a replica of each when `replicas`), every slot covered."""

    def __init__(self, directory: Path, *, replicas: bool = False) -> None:
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        self.replicas = replicas
        self.nodes = [
            RedisServer(directory / f"node-{n}", extra=(*cluster, "--cluster-node-timeout", "2000"))
            for n in range(6 if replicas else 3)
        ]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed to create a cluster (it ships with redis-server)"
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas",
             "1" if self.replicas else "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for node in self.nodes:
            client = redis.Redis(port=node.port, decode_responses=True)
            until(lambda c=client: c.cluster("info")["cluster_state"] == "ok", "cluster_state ok")
            if self.replicas:  # a replica that never synced cannot be promoted
                until(
                    lambda c=client: (
                        c.info("replication")["role"] == "master"
                        or c.info("replication")["master_link_status"] == "up"
                    ),
                    "each replica in sync",
                )
            client.close()
        return self

    def slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) as a live node says them."""
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                with redis.Redis(port=node.port, decode_responses=True, socket_timeout=2) as c:
                    return [
                        (int(start), int(end), int(master[1]))
                        for start, end, master, *_ in c.execute_command("CLUSTER SLOTS")
                    ]
            except (redis.RedisError, OSError):
                continue
        raise AssertionError("no live node answers")

    def masters(self) -> list[int]:
        return sorted({port for _, _, port in self.slots()})

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    def owner(self, namespace: str) -> int:
        """The port of the master that serves the namespace's slot now."""
        slot = key_slot(("{" + namespace + "}").encode())
        for start, end, port in self.slots():
            if start <= slot <= end:
                return port
        raise AssertionError(f"slot {slot} is not served")

    def node_id(self, port: int) -> str:
        with redis.Redis(port=port, decode_responses=True) as client:
            return str(client.execute_command("CLUSTER MYID"))

    def namespace_on(self, port: int, prefix: str, *, lowest: bool = False) -> str:
        """A namespace whose slot the master at `port` serves (its lowest slot: the one
        `redis-cli --cluster reshard --cluster-slots 1` moves first)."""
        ranges = [(start, end) for start, end, master in self.slots() if master == port]
        for number in range(200_000):
            name = f"{prefix}{number}"
            slot = key_slot(("{" + name + "}").encode())
            if lowest and slot == min(start for start, _ in ranges):
                return name
            if not lowest and any(start <= slot <= end for start, end in ranges):
                return name
        raise AssertionError("no namespace found for that node")

    def server(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def reshard_one(self, source: int, target: int) -> None:
        """Move the lowest slot of `source` (with its keys) to `target`, as an operator
        does: redis-cli's own resharding (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE)."""
        cli = shutil.which("redis-cli")
        assert cli
        subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from",
             self.node_id(source), "--cluster-to", self.node_id(target), "--cluster-slots", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
