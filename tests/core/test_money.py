"""How sums of money read in `status` and `verify`."""

from __future__ import annotations

import pytest

from orchestrator.money import money


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0.0, "$0.00"), (5.0, "$5.00"), (0.42, "$0.42"), (0.421337, "$0.42"),
        (12.3456, "$12.35"), (0.015, "$0.015"), (0.0046333, "$0.0046"),
        (0.0000123, "$0.000012"),
    ],
)  # fmt: skip
def test_cents_unless_a_small_sum_would_read_as_nothing(amount: float, shown: str) -> None:
    assert money(amount) == shown
