"""Task code: each module is a category, each `@task` function in it a task.

`workers/tasks/system.py` holds `system.sleep`, `system.echo` and `system.crud`. Add a
module here (or run `orchestrator new-workflow`) to add a category; nothing else needs
registering.
"""
