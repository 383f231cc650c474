"""The machine's speed now: a fixed pure-Python loop, timed.

    python bench/calibrate.py

The CPU of these VMs drifts by up to 2x within a day, so a figure means little without
the speed of the machine when it was taken. `bench/all.py` runs this before and after
the benchmarks; a report whose two calibrations differ by much was taken on a machine
that changed speed under it, and its ratios are the figures to trust.
"""

from __future__ import annotations

import statistics
import time

LOOP = 2_000_000
RUNS = 7


def loop_ms() -> float:
    """One run of the loop, in milliseconds (integer arithmetic and a dict, no I/O)."""
    seen: dict[int, int] = {}
    began = time.perf_counter()
    total = 0
    for i in range(LOOP):
        total += i * i % 7
        if i % 1024 == 0:
            seen[i] = total
    return (time.perf_counter() - began) * 1000


def calibration() -> tuple[float, float]:
    """Best and median of `RUNS` runs (ms): the best is the machine unhindered."""
    runs = [loop_ms() for _ in range(RUNS)]
    return min(runs), statistics.median(runs)


def main() -> None:
    best, median = calibration()
    print(f"calibration loop ({LOOP:,} steps): best {best:.0f} ms, median {median:.0f} ms")


if __name__ == "__main__":
    main()
