"""Durations as people write them in settings and flags: `30d`, `12h`, `15m`, `5s`, `2w`,
a bare number of seconds, or `never`.

One parser, so `batch_retention`, `dead_letter_retention` and `dispatch --keep` read the
same words; `never` is infinity, which every comparison with a time handles as is.
"""

from __future__ import annotations

import math
import re

NEVER = math.inf
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z")
EXAMPLES = '"30d", "12h", "15m", "5s" or "never"'


def parse_duration(text: str | float) -> float:
    """Seconds; ValueError with a sentence fit for the user when `text` is no duration."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and text.strip().lower() == "never":
        return NEVER
    elif isinstance(text, str) and (match := _DURATION.match(text.lower())):
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    else:
        raise ValueError(f"{text!r} is not a duration: write {EXAMPLES}")
    if not 0 < seconds < NEVER:
        raise ValueError(f"{text!r} is not a duration: it must be positive ({EXAMPLES})")
    return seconds


def describe(seconds: float) -> str:
    """The shortest exact spelling: 2592000 → `30d`; infinity → `never`."""
    if seconds == NEVER:
        return "never"
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"
