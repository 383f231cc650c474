"""A mistyped subcommand or option gets the closest real name, not only argparse's list."""

from __future__ import annotations

import pytest

from orchestrator import cli


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["dispach"], "did you mean 'dispatch'?"),
        (["status", "--jsn"], "did you mean '--json'?"),
        (["plan", "system_test", "--mode", "debug", "--cout", "3"], "did you mean '--count'?"),
        (["verify", "--batch", "b", "--wiat"], "did you mean '--wait'?"),
    ],
)
def test_a_typo_is_answered_with_the_closest_name(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("orchestrator")
    assert last.endswith(hint)


def test_nothing_close_adds_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["status", "--zzzzzzzz"])
    assert "did you mean" not in capsys.readouterr().err
