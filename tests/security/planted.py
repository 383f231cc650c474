"""A module that must never be imported by a manifest or a payload naming it.

Importing it writes the file named by `$PLANTED_MARKER`, so a test can tell from the
outside whether any process (dispatch, conductor, worker) ever imported it.
"""

from __future__ import annotations

import os
from pathlib import Path

if marker := os.environ.get("PLANTED_MARKER"):
    Path(marker).write_text("imported")


async def run(*args: object) -> None:
    """What a task would look like, were this module ever registered."""
