"""Which token buckets a job must pass, from the `rate_limits` settings.

Buckets are named `task:<glob>` (every task the glob matches shares one bucket),
`pool:<name>` (a pool's intake), or any other name a job opts into with
`meta.rate_limit`. The buckets themselves are GCRA state in Redis, evaluated by
`lua/forward.lua` on Redis's clock so that every conductor shares them.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from orchestrator.job import Job
from orchestrator.pools import RateLimit
from orchestrator.settings import Settings


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self._limits = settings.rate_limits
        self._task_cache: dict[str, list[str]] = {}

    def job_buckets(self, job: Job) -> str:
        """The job's own buckets as the forward script reads them:
        "name rate burst jitter;…"."""
        names = list(self._for_task(job["task"]))
        for name in job.get("meta", {}).get("rate_limit", []):
            if name in self._limits and name not in names:
                names.append(name)
        return ";".join(_spec(name, self._limits[name]) for name in names)

    def pool_bucket(self, pool: str) -> RateLimit | None:
        return self._limits.get(f"pool:{pool}")

    def unknown(self, job: Job) -> list[str]:
        """Names in `meta.rate_limit` that no setting defines (they limit nothing)."""
        return [n for n in job.get("meta", {}).get("rate_limit", []) if n not in self._limits]

    def _for_task(self, task: str) -> list[str]:
        if task not in self._task_cache:
            self._task_cache[task] = [
                name
                for name in self._limits
                if name.startswith("task:") and fnmatchcase(task, name.removeprefix("task:"))
            ]
        return self._task_cache[task]


def _spec(name: str, limit: RateLimit) -> str:
    return f"{name} {limit.rate!r} {limit.burst} {limit.jitter!r}"
