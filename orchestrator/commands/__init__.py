"""The subcommands of `orchestrator`, one module each, registered in this order."""

from __future__ import annotations

from orchestrator.commands import conductor, dispatch, plan, worker

COMMANDS = (plan, dispatch, conductor, worker)
