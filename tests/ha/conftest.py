"""The redundant Redis the HA tests run on, started for each test and stopped after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.topologies import SentinelSet


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    made = SentinelSet(tmp_path / "redis")
    try:
        yield made.start()
    finally:
        made.stop()
