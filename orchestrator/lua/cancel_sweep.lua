-- Remove the cancelled jobs from one list or sorted set of envelopes (a backlog level,
-- the ready list, a waiting or no-worker list, a conductor's processing list, the
-- deferred set), atomically, writing each one's `cancelled` receipt; a no-worker list
-- it empties takes its task out of `<root>:no_worker_tasks` too.
--
-- Lists are rotated in place (LPOP/RPUSH once round), which keeps the order of the
-- jobs that stay and needs no memory beyond one item; a list is only rotated when a
-- first read-only pass found a job to remove. Cost: O(length) per structure, once per
-- cancel. An item is decoded only when a cheap substring test hits; what cannot be
-- decoded as an envelope (a bare line a producer pushed) is left for the conductor,
-- which checks every job it routes.
-- KEYS[1] the list or sorted set
-- ARGV: kind ("list" | "zset"), root, now (s), error text, batch ("" for ids only),
--   then pairs of batch and job id (jobs cancelled one by one)
--#include cancelling
local key, kind, root = KEYS[1], ARGV[1], ARGV[2]
local now, error, batch = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local wanted, needles = {}, {}
if batch ~= '' then needles[1] = batch end
for i = 6, #ARGV, 2 do
  wanted[ARGV[i] .. ' ' .. ARGV[i + 1]] = true
  needles[#needles + 1] = ARGV[i + 1]
end

local function target(item)
  local hit = false
  for _, needle in ipairs(needles) do
    if string.find(item, needle, 1, true) then
      hit = true
      break
    end
  end
  if not hit then return nil end
  local ok, job = pcall(cjson.decode, item)
  if not ok or type(job) ~= 'table' or type(job.batch) ~= 'string'
      or type(job.id) ~= 'string' or type(job.task) ~= 'string' then
    return nil
  end
  if job.batch == batch or wanted[job.batch .. ' ' .. job.id] then return job end
  return nil
end

local removed = 0
local function cancel(item, job)
  cancel_job(root, job.batch, job.id, job.task, item, now, error)
  removed = removed + 1
end

local CHUNK = 1000
if kind == 'list' then
  local n = redis.call('LLEN', key)
  local found = false
  for start = 0, n - 1, CHUNK do
    for _, item in ipairs(redis.call('LRANGE', key, start, start + CHUNK - 1)) do
      if target(item) then
        found = true
        break
      end
    end
    if found then break end
  end
  if found then
    for _ = 1, n do
      local item = redis.call('LPOP', key)
      local job = target(item)
      if job then cancel(item, job) else redis.call('RPUSH', key, item) end
    end
    -- A no-worker list left empty: its task waits for nothing any more, so no conductor
    -- goes on warning of it (every minute, across restarts).
    local parked = root .. ':no_worker:'
    if key:sub(1, #parked) == parked and redis.call('LLEN', key) == 0 then
      redis.call('ZREM', root .. ':no_worker_tasks', key:sub(#parked + 1))
    end
  end
else
  local n = redis.call('ZCARD', key)
  local doomed = {}
  for start = 0, n - 1, CHUNK do
    for _, item in ipairs(redis.call('ZRANGE', key, start, start + CHUNK - 1)) do
      local job = target(item)
      if job then doomed[#doomed + 1] = {item, job} end
    end
  end
  for _, pair in ipairs(doomed) do
    redis.call('ZREM', key, pair[1])
    cancel(pair[1], pair[2])
  end
end
return removed
