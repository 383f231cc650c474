"""Hybrid job execution: metal first, cloud as spillover, nothing lost."""

__version__ = "0.1.0"
