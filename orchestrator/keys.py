"""Every Redis key name the project uses is built here, and nowhere else.

All keys share one hash tag (`{namespace}`) so that the multi-key Lua scripts keep
working on Redis Cluster, where every key a script touches must live in one slot. The
namespace is a setting, which also lets tests and several deployments share a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKLOG_PREFIX = "backlog:"
_BACKLOG_NAME = re.compile(r"^backlog:[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def backlog_name(raw: str) -> str:
    """Normalise what a user typed (`stress` or `backlog:stress`) to `backlog:stress`.

    Raises ValueError with a sentence fit for the user when the name cannot be a key.
    """
    name = raw if raw.startswith(BACKLOG_PREFIX) else BACKLOG_PREFIX + raw
    if not _BACKLOG_NAME.match(name):
        raise ValueError(
            f"invalid backlog name {raw!r}: use letters, digits and _ . : - "
            "(e.g. backlog:stress), at most 100 characters"
        )
    return name


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "orc"

    @property
    def _root(self) -> str:
        return "{" + self.namespace + "}"

    def backlog(self, name: str) -> str:
        """The list a backlog's jobs wait in; `name` is already normalised."""
        return f"{self._root}:{name}"

    @property
    def backlogs(self) -> str:
        """Set of every backlog name ever dispatched to, so consumers can find them."""
        return f"{self._root}:backlogs"

    def batch(self, batch_id: str) -> str:
        """Hash describing one dispatched manifest (path, digest, backlog, counts); its
        `queued` count is the cursor that makes dispatch idempotent."""
        return f"{self._root}:batch:{batch_id}"

    def staging(self, batch_id: str, token: str) -> str:
        """List one dispatch fills while it validates, before anything reaches a backlog."""
        return f"{self._root}:staging:{batch_id}:{token}"

    @property
    def batches(self) -> str:
        """Sorted set of batch ids scored by first dispatch time."""
        return f"{self._root}:batches"

    def pool_queue(self, pool: str) -> str:
        """The arq queue (a sorted set) a pool's workers consume."""
        return f"{self._root}:queue:{pool}"
