"""Every benchmark in one run, between two calibrations of the machine.

    python bench/all.py                      # all of them (about a quarter of an hour)
    python bench/all.py --quick              # each with --quick where it has it
    python bench/all.py fleet peers pacing   # only these
    python bench/all.py --report bench.txt   # also written to a file

Figures taken hours apart on these VMs differ by up to 2x for the same code, so a
closing note quotes one run of this, whose calibration before and after says how fast
the machine was throughout. Each benchmark runs as its own process, one after another,
its output passed through as it comes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bench.calibrate import LOOP, calibration

HERE = Path(__file__).resolve().parent
# In the order a reader meets them: producing, routing, running, then the rest.
BENCHES = (
    "dispatch",
    "conductor",
    "fleet",
    "peers",
    "pacing",
    "elastic",
    "web",
    "gap_fill",
    "tasks",
)
HAS_QUICK = {"dispatch", "conductor", "fleet", "peers", "pacing"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHES)})",
    )
    parser.add_argument("--quick", action="store_true", help="--quick where a benchmark has it")
    parser.add_argument("--report", type=Path, help="also write the whole report here")
    options = parser.parse_args()
    names = options.names or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (there are: {', '.join(BENCHES)})")
    report = options.report.open("w") if options.report else None
    try:
        run(names, quick=options.quick, report=report)
    finally:
        if report:
            report.close()


def run(names: list[str], *, quick: bool, report: TextIO | None) -> None:
    def say(line: str) -> None:
        print(line, flush=True)
        if report:
            report.write(line + "\n")

    say(f"# benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, python {sys.version.split()[0]}")
    say(calibrated("before"))
    failed = []
    for name in names:
        command = [sys.executable, str(HERE / f"{name}.py")]
        if quick and name in HAS_QUICK:
            command.append("--quick")
        say(f"\n## {name} ({' '.join(['python', f'bench/{name}.py', *command[2:]])})")
        began = time.monotonic()
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent
        ) as child:
            assert child.stdout is not None
            for line in child.stdout:
                say(line.rstrip("\n"))
        if child.returncode != 0:
            failed.append(name)
            say(f"(exit {child.returncode})")
        say(f"({time.monotonic() - began:.0f} s)")
    say("\n" + calibrated("after"))
    if failed:
        say(f"failed: {', '.join(failed)}")
        raise SystemExit(1)


def calibrated(when: str) -> str:
    best, median = calibration()
    return f"calibration {when} ({LOOP:,}-step loop): best {best:.0f} ms, median {median:.0f} ms"


if __name__ == "__main__":
    main()
