"""The conductor's routing of each job as a span, while tracing is on (`tracing`).

A job's routing span is a child of the context its envelope carries — a producer's
`traceparent` on a bare line, or a requeued job's last run — else of its batch's
dispatch span (whose context `dispatch` recorded on the batch), else a trace of its
own. The envelope the worker gets carries the routing span's context, so the run is its
child. The span tells the pool chosen and why (`orchestrator.routing_reason`: metal
free, spill, rule, pinned) or why the job went nowhere yet (rate limit, pool full, no
worker, cancelled). A job routed again in a moment (paced, or every pool full) leaves
its span unended: it is never sent, and the next routing's span tells the story.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from orchestrator import tracing
from orchestrator.job import Job
from orchestrator.keys import Keys
from orchestrator.routing import Router
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

BATCHES_REMEMBERED = 1024  # batches whose dispatch context this conductor keeps at hand
AGAIN = frozenset({"paced", "full", "requeued"})  # routed again soon: no span sent
WAITS = frozenset({"rate_limited", "pool_rate_limited", "spill_wait"})


class RoutingTraces:
    def __init__(self, settings: Settings, redis: Redis, keys: Keys, router: Router) -> None:
        self._redis = redis
        self._keys = keys
        self._router = router
        self._queues = {p.name: p.queue or keys.pool_queue(p.name) for p in settings.pools}
        self._batches: OrderedDict[str, Context | None] = OrderedDict()

    async def start(self, job: Job, source: str | None) -> Span:
        parent = tracing.context_of(job.get("meta"))
        if parent is None:
            parent = await self._dispatched(job["batch"])
        where = source or self._keys.ready
        attributes = tracing.messaging(
            "route", "send", where, **{
                "messaging.message.id": job["id"], "orchestrator.batch": job["batch"],
                "orchestrator.task": job["task"], "orchestrator.backlog": source,
            },
        )  # fmt: skip
        from opentelemetry.trace import SpanKind

        return tracing.tracer().start_span(
            f"route {where}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )

    def carrying(self, job: Job, span: Span) -> Job:
        """The job as the worker gets it: its `meta` carries `span`'s context."""
        meta: dict[str, Any] = dict(job.get("meta") or {})
        tracing.put_context(meta, span)
        return {**job, "meta": meta}  # type: ignore[typeddict-item]

    def routed(self, span: Span, job: Job, route: Any, outcome: str, detail: Any) -> None:
        if outcome in AGAIN:
            return
        if outcome == "forwarded":
            pool, _, due = detail.decode().partition(" ")
            queue = self._queues.get(pool, pool)
            span.update_name(f"route {queue}")
            span.set_attributes({
                "messaging.destination.name": queue, "orchestrator.pool": pool,
                "orchestrator.routing_reason": route.reason(pool, self._router.first),
            })  # fmt: skip
            if due and float(due) > time.time() + 0.001:  # a rate-limited job's instant
                span.add_event("rate_limit_wait", {"orchestrator.due": float(due)})
        elif outcome in WAITS:
            span.add_event(outcome, {"orchestrator.due": float(detail) / 1000})
        elif outcome in ("waiting", "no_worker"):
            span.set_attribute("orchestrator.waiting_for", detail.decode())
        self.end(span, outcome, "unknown_task" if outcome == "unknown_task" else None)

    def end(self, span: Span, outcome: str, error_type: str | None = None) -> None:
        tracing.ended(span, outcome, error_type)
        span.end()

    async def _dispatched(self, batch: str) -> Context | None:
        """The batch's dispatch span context, read once per batch and kept."""
        if batch in self._batches:
            self._batches.move_to_end(batch)
            return self._batches[batch]
        raw = await self._redis.hget(self._keys.batch(batch), tracing.TRACEPARENT)  # type: ignore[misc]
        found = tracing.context_of({tracing.TRACEPARENT: raw.decode()}) if raw else None
        self._batches[batch] = found
        if len(self._batches) > BATCHES_REMEMBERED:
            self._batches.popitem(last=False)
        return found
