"""Hybrid job execution: metal first, cloud as spillover, nothing lost.

The modules at this level are the core every part shares: the settings, the key names,
the job contract, manifests, the task registry, Redis connections and Lua scripts,
receipts, arq's job format, errors, logs and metrics. The parts of the flow are
packages beside them — `dispatch`, `conductor`, `worker`, `scaling`, `control`,
`status`, `verify`, `web`, `stack` — and the entry, `cli` and `commands`, sits on top.

May import: the core. A part imports the core and the parts its `__init__` names; the
entry imports anything (tests/test_layout.py checks it).
"""

from orchestrator import _moved

__version__ = "0.1.0"

_moved.install()
