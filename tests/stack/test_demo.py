"""`orchestrator demo`, run as a newcomer would: no Redis URL, a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_stack import REPO


def left_behind(directory: Path) -> list[str]:
    """Processes started from `directory` (the workers, the conductor) or serving the
    demo's temporary Redis data."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == str(directory) or "orchestrator-demo-" in command:
            found.append(command)
    return found


# Never beside another demo: test_demo looks for any demo's processes left running.
@pytest.mark.xdist_group("demo")
def test_demo_runs_the_lifecycle_on_both_pools_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONPATH": str(REPO)}
    # Jobs long enough that metal is still full when the launched cloud workers start:
    # at 2-3 s a loaded CI machine booted them after metal's first jobs had ended, and
    # no moment showed both (the spillover line is said of such a moment).
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "demo", "--jobs", "16", "--min-seconds", "4",
         "--max-seconds", "5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = process.communicate(timeout=120)
    text = output.decode()
    assert process.returncode == 0, text
    assert "spillover: metal full" in text
    pools = next(line for line in text.splitlines() if line.startswith("pools: "))
    assert "cloud" in pools
    assert "metal" in pools
    assert "all 16 jobs succeeded" in text
    # cloud capacity appeared when metal filled, and was paid for only while it ran
    bill = next(
        line for line in text.splitlines() if line.startswith("cloud: ") and "launched" in line
    )
    found = re.fullmatch(
        r"cloud: [1-9]\d* workers? launched; batch cost (\$[\d.]+), spend today (\$[\d.]+) "
        r"at \$0\.80/h",
        bill,
    )
    assert found, bill
    # one figure each, the same as verify's cost line and status's spend show
    assert f"cost {found[1]} at $0.80/h" in text
    assert float(found[2][1:]) >= float(found[1][1:]) > 0  # idle and boot time are paid too
    # piped, the live view draws nothing: the peak frame is printed once, after the run
    assert text.count("at the peak of the spillover") == 1
    assert text.index("dispatched") < text.index("at the peak of the spillover")
    assert left_behind(tmp_path) == []
    assert (tmp_path / "manifests" / "system_test_stress_supervisor_01.jsonl").exists()
    assert (tmp_path / "manifests" / "system_test_stress_supervisor_01.jsonl.verify.json").exists()
