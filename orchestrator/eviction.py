"""Never run on a Redis that evicts: its `maxmemory-policy` checked at start; and how a
full one (at `maxmemory` under `noeviction`, refusing writes with OOM) is told apart.

A Redis at `maxmemory` with an eviction policy drops keys without a word: queued jobs,
receipts, a conductor's processing list. Only `noeviction` is safe — the `volatile-*`
policies too would drop keys of ours, because some of them do carry a TTL and are the
very ones that must not vanish early: worker and conductor heartbeats (a lapsed one
hands a live process's jobs to a peer, which runs them twice), the scaler's lease, a
dispatch's staging list, and arq's in-progress and result keys. So every policy but
`noeviction` is refused by the conductor (and by `up` on a Redis of the user's, since
it starts one) and warned of by the worker and dispatch; the setting
`allow_evicting_redis` turns the refusal into a warning for whoever knows better.

A managed Redis or an ACL user may refuse `CONFIG GET`: then the policy is unknown,
said once, and the process goes on.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from orchestrator.errors import UserError
from orchestrator.settings import redact_url

SAFE_POLICY = "noeviction"
FIX = "CONFIG SET maxmemory-policy noeviction"


class EvictingRedis(UserError):
    """The Redis evicts keys and the process that found it does not run on such."""


async def eviction_policy(redis: Redis) -> str | None:
    """The server's `maxmemory-policy`, or None when it will not say (CONFIG refused)."""
    try:
        reply = await redis.config_get("maxmemory-policy")
    except ResponseError:  # NoPermissionError (ACL) and "unknown command" (managed) alike
        return None
    policy = reply.get("maxmemory-policy")
    return str(policy) if policy is not None else None


async def check_eviction(
    redis: Redis,
    url: str,
    *,
    refuse: bool,
    allowed: bool,
    warn: Callable[[str], None],
    unknown: bool = True,
) -> str | None:
    """Refuse (`EvictingRedis`, one line with the fix) when `refuse` and the Redis at
    `url` evicts, unless `allowed`; else hand `warn` one line. A policy the server will
    not tell is warned of only when `unknown` (the services, once at start; not every
    `dispatch`, whose user may well run under the README's ACL rule). Returns the
    policy."""
    policy = await eviction_policy(redis)
    where = redact_url(url)
    if policy is None and not unknown:
        return None
    if policy is None:
        warn(
            f"cannot read maxmemory-policy of the Redis at {where} (CONFIG GET refused): "
            f"make sure it is {SAFE_POLICY}, or it may drop queued jobs and receipts"
        )
        return None
    if policy == SAFE_POLICY:
        return policy
    said = (
        f"the Redis at {where} evicts keys (maxmemory-policy {policy}): at maxmemory it "
        f"would silently drop queued jobs, receipts and locks; run `{FIX}` on it "
        "(and set it in its config)"
    )
    if refuse and not allowed:
        raise EvictingRedis(f"{said}, or set allow_evicting_redis = true to run anyway")
    warn(said)
    return policy


def is_oom(exc: BaseException) -> bool:
    """Whether Redis refused a write for want of memory (`OOM command not allowed when
    used memory > 'maxmemory'`: redis-py's OutOfMemoryError), also as the reason a
    MULTI (EXECABORT) or a script was refused."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "used memory > 'maxmemory'" in str(exc)
    )


FULL_HINT = "free memory (let settled batches be pruned: batch_retention), or raise its maxmemory"
