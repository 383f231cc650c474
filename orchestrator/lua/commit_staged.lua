-- Move the next slice of a fully validated, staged batch onto its backlog.
--
-- A batch's jobs reach the backlog in manifest order, so how many are already queued
-- (the batch's `queued` field) is a cursor: staged jobs below it are dropped, the rest
-- pushed. Committing a manifest dispatched before, or finishing a commit a crash cut
-- short, therefore queues no job twice — with no per-job bookkeeping in Redis.
-- KEYS[1] staging list, KEYS[2] backlog list, KEYS[3] batch hash
-- ARGV[1] batch index of the staging list's first job, ARGV[2] most jobs to move
local first = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local n = #items
if n == 0 then
  return {0, 0}
end
local cursor = tonumber(redis.call('HGET', KEYS[3], 'queued') or '0')
if cursor < first then
  return redis.error_reply('batch cursor ' .. cursor .. ' is behind staged job ' .. first)
end
local pushed = 0
if cursor < first + n then
  local i = cursor - first + 1
  while i <= n do  -- unpack() is limited to ~8000 values at a time
    local j = math.min(i + 4999, n)
    redis.call('RPUSH', KEYS[2], unpack(items, i, j))
    i = j + 1
  end
  pushed = first + n - cursor
  redis.call('HSET', KEYS[3], 'queued', first + n)
end
redis.call('LTRIM', KEYS[1], n, -1)
return {n, pushed}
