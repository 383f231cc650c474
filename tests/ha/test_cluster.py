"""Redis Cluster, for real: three masters; two namespaces whose slots live on different
masters, each with its own conductor and worker, reached through one
`redis+cluster://` URL; and a namespace whose slot is resharded to another master while
its batch runs (MOVED: the services re-pin and carry on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.ha.topologies import Cluster, until, until_all_succeeded
from tests.live_stack import Stack, write_manifest

pytestmark = pytest.mark.chaos


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "redis")
    try:
        yield made.start()
    finally:
        made.stop()


def stack_on(cluster: Cluster, namespace: str, directory: Path) -> Stack:
    """A stack whose processes know only the cluster URL; the test reads the keys on the
    master that serves the namespace (a plain client: every key is in that one slot)."""
    directory.mkdir()
    run = Stack(f"redis://127.0.0.1:{cluster.owner(namespace)}/0", namespace, directory, {})
    run.env["REDIS_URL"] = cluster.url
    return run


def test_two_namespaces_on_two_masters_each_verify_their_batch(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second, _ = cluster.masters()
    names = [cluster.namespace_on(first, "a"), cluster.namespace_on(second, "b")]
    assert cluster.owner(names[0]) != cluster.owner(names[1])
    runs = [stack_on(cluster, name, tmp_path / name) for name in names]
    try:
        for run in runs:
            run.worker("metal", 4)
            run.conductor()
        for number, run in enumerate(runs):
            echoes = [{"task": "system.echo", "args": [n]} for n in range(40)]
            run.dispatch(write_manifest(run.directory / f"spread_0{number + 1}.jsonl", echoes))
        for number, run in enumerate(runs):
            receipts = run.wait_for_receipts(f"spread_0{number + 1}", 40)
            assert {r["status"] for r in receipts} == {"succeeded"}
            done = run.command("verify", "--batch", f"spread_0{number + 1}")
            assert done.returncode == 0, done.stdout + done.stderr
            # Nothing of this namespace on a master that does not serve its slot.
            for node in cluster.nodes:
                if node.port != cluster.owner(run.keys.namespace):
                    with redis.Redis(port=node.port) as other:
                        # by its hash tag: a short name ("a0") is also found in the
                        # random hex of other keys (a conductor's id)
                        tag = "{" + run.keys.namespace + "}"
                        assert not any(tag in key.decode() for key in other.keys("*"))
    finally:
        for run in runs:
            run.stop()


def test_a_namespace_resharded_mid_batch_follows_its_slot(cluster: Cluster, tmp_path: Path) -> None:
    _, source, target = cluster.masters()
    name = cluster.namespace_on(source, "r", lowest=True)
    run = stack_on(cluster, name, tmp_path / name)
    try:
        run.worker("metal", 4)
        run.conductor()
        sleepers = [{"task": "system.sleep", "args": [0.1]} for _ in range(80)]
        run.dispatch(write_manifest(run.directory / "moved_01.jsonl", sleepers))
        until(lambda: len(run.receipts("moved_01")) >= 10, "10 jobs done", 60)
        cluster.reshard_one(source, target)
        assert cluster.owner(name) == target
        run.redis.close()
        run.redis = redis.Redis(port=target)

        until_all_succeeded(run, "moved_01", 80, "on the new owner", 90)
        assert all(process.poll() is None for process in run.processes), "a service exited"
        done = run.command("verify", "--batch", "moved_01")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        run.stop()


def test_a_namespace_whose_master_dies_follows_the_promoted_replica(tmp_path: Path) -> None:
    """Three masters with a replica each; the master of the namespace's slot is SIGKILLed
    mid-batch. The replica promoted in its place sends no MOVED: the services find the
    new owner by asking the cluster again, and the batch ends all succeeded."""
    cluster = Cluster(tmp_path / "redis", replicas=True)
    cluster.start()
    try:
        master = cluster.masters()[0]
        name = cluster.namespace_on(master, "f")
        run = stack_on(cluster, name, tmp_path / name)
        try:
            run.worker("metal", 4)
            run.conductor()
            sleepers = [{"task": "system.sleep", "args": [0.2]} for _ in range(80)]
            run.dispatch(write_manifest(run.directory / "promoted_01.jsonl", sleepers))
            until(lambda: len(run.receipts("promoted_01")) >= 10, "10 jobs done", 60)
            cluster.server(master).kill()
            until(lambda: cluster.owner(name) != master, "a replica promoted", 60)
            run.redis.close()
            run.redis = redis.Redis(port=cluster.owner(name))

            until_all_succeeded(run, "promoted_01", 80, "on the promoted replica", 120)
            assert all(process.poll() is None for process in run.processes), "a service exited"
        finally:
            run.stop()
    finally:
        cluster.stop()
