"""Careless input that needs no Redis: each refused in one line, or simply accepted."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner


def test_a_toml_syntax_error_is_one_line_naming_file_and_line_exit_2(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """No traceback and no bare tomllib message: the file, the line, exit 2."""
    (tmp_path / "orchestrator.toml").write_text('namespace = "x"\nbacklogs = ["a",\n')
    result = run_cli("plan", "system_test", "--mode", "debug")
    assert result.code == 2
    assert result.err == (
        "orchestrator: error: orchestrator.toml:2: invalid TOML: Invalid value "
        "(at the end of the file)\n"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("= 1\n")
    flagged = run_cli("--config", str(broken), "plan", "system_test")
    assert flagged.code == 2
    assert flagged.err.startswith(f"orchestrator: error: {broken}:1: invalid TOML: ")
    assert not (tmp_path / "manifests").exists()


def test_a_dry_run_of_one_job_says_one_job(run_cli: CliRunner, tmp_path: Path) -> None:
    """One job is "1 job", never "1 jobs"."""
    path = tmp_path / "one.jsonl"
    path.write_text('{"task": "system.echo", "args": []}\n')
    result = run_cli("dispatch", str(path), "--backlog", "stress", "--dry-run")
    assert result.out == f"{path} (batch one) is valid: 1 job; dry run, nothing queued\n"


def test_a_batch_name_that_cannot_be_a_key_is_refused_naming_the_flag(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """`--batch ../../x` is the flag's fault, not the file's: the message says so."""
    path = tmp_path / "fine.jsonl"
    path.write_text('{"task": "system.echo", "args": []}\n')
    for bad in ("../../x", "", "a b", "{tag}"):
        result = run_cli("dispatch", str(path), "--backlog", "stress", "--batch", bad, "--dry-run")
        assert result.code == 2, bad
        assert result.err.startswith(f"orchestrator: error: --batch {bad!r}: "), result.err
        assert "letters, digits and _ . : -" in result.err
        assert result.err.count("\n") == 1
    odd = tmp_path / "with space.jsonl"
    odd.write_text('{"task": "system.echo", "args": []}\n')
    named = run_cli("dispatch", str(odd), "--backlog", "stress", "--dry-run")
    assert named.code == 2
    assert f"the file name of {odd}" in named.err
    assert "pass --batch NAME" in named.err
    renamed = run_cli("dispatch", str(odd), "--backlog", "stress", "--batch", "ok", "--dry-run")
    assert renamed.code == 0, renamed.err
