"""Workflows: one folder each, with a `plan.py` defining `WORKFLOW`."""
