"""Batch control: what an operator does to work already queued or running.

`cancel`, `pausing` (backlogs and pools), `retry`, and `deadletters` (read, requeue,
purge). Every change is one atomic step in Redis, safe against conductors and workers
moving the same jobs.

May import: the core, dispatch.
"""
