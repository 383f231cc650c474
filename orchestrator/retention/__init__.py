"""Retention: settled batches archived, then removed from Redis; dead letters bounded —
so Redis memory stays bounded however long the service runs.

`pruner` holds its lease and runs the loop (inside every conductor); `archive` writes
and reads a batch's archive (also for `export` and `verify`); `dead_letters` bounds the
dead-letter list.

May import: the core.
"""
