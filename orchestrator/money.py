"""How an amount of money reads, in `status` (a day's spend, a budget) and `verify` (a
batch's cost): in cents, unless that would show a small sum as $0.00 — a batch's share
of a few worker-minutes is a fraction of a cent, and should still read as what it is.
No currency is configured; prices and budgets are in one, shown as `$`.
"""

from __future__ import annotations

import math


def money(amount: float) -> str:
    """`$5.00`, `$0.42`; under a dollar, two significant digits, at least in cents:
    `$0.015`, `$0.0046`."""
    if amount >= 1 or amount <= 0 or round(amount, 2) == amount:
        return f"${amount:.2f}"
    decimals = max(2, 1 - math.floor(math.log10(amount)))
    return f"${amount:.{decimals}f}"
