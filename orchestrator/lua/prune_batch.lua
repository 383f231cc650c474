-- Take a settled, archived batch out of sight in one step: its keys renamed to trash
-- keys (O(1) each, whatever their size) and the batch gone from the batches zset, so no
-- reader ever sees half a batch; the pruner then deletes the trash in bounded steps.
-- Refused when anything changed since the archive was written: a run began (running
-- hash not empty), a receipt was added, or the expiry is no longer due (a `dlq
-- requeue` or `retry` cleared it).
-- KEYS[1] batch hash, KEYS[2] batches zset, KEYS[3] pruning set, then per part:
--   the part's key, its trash key
-- ARGV[1] batch id, ARGV[2] receipts archived, ARGV[3] unix time now (the pruner's),
--   ARGV[4..] part names (the first: receipts, the second: running, the batch hash among
--   them)
-- Returns 'pruned', or why not: 'gone', 'running', 'changed', 'not_due'
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'gone'
end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '')
if not expires or expires > tonumber(ARGV[3]) then
  return 'not_due'
end
if redis.call('HLEN', KEYS[6]) > 0 then
  return 'running'
end
if redis.call('HLEN', KEYS[4]) ~= tonumber(ARGV[2]) then
  return 'changed'
end
for i = 4, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('UNLINK', KEYS[i + 1])  -- a leftover of an earlier prune: never DEL'd in here
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 'pruned'
