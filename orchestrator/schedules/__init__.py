"""Schedules: workflows that plan and dispatch themselves on time (`[[schedules]]`).

The setting and its ticks are the core's (`orchestrator/schedule.py`); `state` is what
Redis keeps of each schedule (its last tick, last batch and outcome, paused or not);
`firing` plans and dispatches one tick; `scheduler` is the loop inside every conductor
that decides which tick is due and claims it, so that one conductor fires it.

May import: the core, dispatch, control.
"""
