"""Did-you-mean for the command line: argparse names what it did not understand (a
subcommand, an option), and this adds the closest name it knows, as git does. Python
3.11's argparse has no such hint of its own (`suggest_on_error` came in 3.14)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors end with "did you mean …?" when a close name
    exists. Subparsers made from it are of this class too (argparse makes them so)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        if not hasattr(self, "_given"):  # the outermost call's: what the user typed
            self._given = list(args) if args is not None else None
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        super().error(message + _hint(self, message))


def _hint(parser: argparse.ArgumentParser, message: str) -> str:
    if match := _INVALID_CHOICE.search(message):
        choices = [str(choice) for choice in _choices_in(message)]
        return _did_you_mean(match.group(1), choices)
    if message.startswith("unrecognized arguments:"):
        given = getattr(parser, "_given", None)
        known = _options_of(_deepest(parser, sys.argv[1:] if given is None else given))
        for token in message.removeprefix("unrecognized arguments:").split():
            if token.startswith("-") and (hint := _did_you_mean(token.split("=")[0], known)):
                return hint
    return ""


def _did_you_mean(typed: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(typed, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _choices_in(message: str) -> list[str]:
    listed = message.partition("(choose from ")[2].rstrip(")")
    return re.findall(r"'([^']*)'", listed)


def _deepest(parser: argparse.ArgumentParser, given: Sequence[str]) -> argparse.ArgumentParser:
    """The subcommand's parser the typed words lead to (`plan system_test` → its own)."""
    current = parser
    for token in given:
        subcommands = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subcommands and token in subcommands[0].choices:
            current = subcommands[0].choices[token]
    return current


def _options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [option for option in parser._option_string_actions if option.startswith("--")]
