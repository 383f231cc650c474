from __future__ import annotations

import pytest

from orchestrator.keys import Keys, backlog_name


def test_bare_and_prefixed_backlog_names_are_the_same_backlog() -> None:
    assert backlog_name("stress") == backlog_name("backlog:stress") == "backlog:stress"


@pytest.mark.parametrize(
    "bad", ["", "backlog:", "has space", "backlog:" + "x" * 120, "back{log}", "stress\n"]
)
def test_backlog_names_that_cannot_be_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid backlog name"):
        backlog_name(bad)


def test_every_key_carries_the_namespace_hash_tag() -> None:
    keys = Keys("prod")
    built = [
        keys.backlog("backlog:stress"),
        keys.backlogs,
        keys.batch("b"),
        keys.staging("b", "t"),
        keys.batches,
        keys.pool_queue("metal"),
    ]
    assert all(key.startswith("{prod}:") for key in built)
    assert len(set(built)) == len(built)
