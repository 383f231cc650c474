"""A one-line progress display for long commands, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class LineProgress:
    """Rewrites one stderr line at most ten times a second; silent when not a TTY."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0
        self._shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done != total):
            return
        self._last = now
        if total:
            width = 30
            filled = width * done // total
            text = f"{phase} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}"
        else:
            text = f"{phase} {done:,} lines"
        self.stream.write(f"\r\x1b[2K{text}")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
