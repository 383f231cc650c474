"""Sync tasks for bench/tasks.py (task_packages = ["bench.sync_tasks"])."""
