-- Move the next slice of a fully validated, staged batch onto its backlog.
--
-- A batch's jobs reach the backlog in manifest order, so how many are already queued
-- (the batch's `queued` field) is a cursor: staged jobs below it are dropped, the rest
-- pushed. Committing a manifest dispatched before, or finishing a commit a crash cut
-- short, therefore queues no job twice — with no per-job bookkeeping in Redis.
--
-- Each job goes onto the list of its priority level, and a level other than 0 is added
-- to the backlog's levels set in the same step, so intake never misses a level that
-- has jobs. In mode "one" every job goes onto one list (all level 0, or the level of
-- `dispatch --priority`): the plain push of a batch without priorities. In mode
-- "marked" (some line has a meta.priority other than 0) a job staged as
-- `<level>|<envelope>` goes onto that level's list and an unmarked one onto level 0's:
-- an envelope starts with `{` or blank space, never with a digit or `-`.
-- Jobs pushed ring the conductors' doorbell in the same step, so one takes them at once.
-- KEYS[1] staging list, KEYS[2] batch hash, KEYS[3] the backlog's levels zset,
--   KEYS[4] the doorbell, KEYS[5..] the backlog's lists of the levels ARGV[4..] (in the
--   same order)
-- ARGV[1] batch index of the staging list's first job, ARGV[2] most jobs to move,
--   ARGV[3] "one" or "marked", ARGV[4..] levels (mode "marked": the first is 0)
-- Returns {jobs taken off the staging list, jobs pushed}
--#include doorbell
local first = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local n = #items
if n == 0 then
  return {0, 0}
end
local cursor = tonumber(redis.call('HGET', KEYS[2], 'queued') or '0')
if cursor < first then
  return redis.error_reply('batch cursor ' .. cursor .. ' is behind staged job ' .. first)
end

local function push(list, jobs, from, to)
  local i = from
  while i <= to do  -- unpack() is limited to ~8000 values at a time
    local j = math.min(i + 4999, to)
    redis.call('RPUSH', list, unpack(jobs, i, j))
    i = j + 1
  end
end

local function mark_used(level)
  if level ~= 0 then
    redis.call('ZADD', KEYS[3], level, level)
  end
end

local pushed = 0
if cursor < first + n then
  local start = cursor - first + 1
  if ARGV[3] == 'one' then
    push(KEYS[5], items, start, n)
    mark_used(tonumber(ARGV[4]))
  else
    local lists = {}
    for k = 5, #KEYS do
      lists[tonumber(ARGV[k - 1])] = {key = KEYS[k], jobs = {}}
    end
    for i = start, n do
      local item, level = items[i], 0
      local byte = string.byte(item, 1)
      if byte == 45 or (byte >= 48 and byte <= 57) then
        local bar = string.find(item, '|', 2, true)
        level, item = tonumber(string.sub(item, 1, bar - 1)), string.sub(item, bar + 1)
      end
      local list = lists[level]
      if not list then
        return redis.error_reply('staged job ' .. (first + i - 1) .. ': level ' .. level .. ' not given')
      end
      list.jobs[#list.jobs + 1] = item
    end
    -- nothing is written before every job of the slice has found its list
    for level, list in pairs(lists) do
      if #list.jobs > 0 then
        push(list.key, list.jobs, 1, #list.jobs)
        mark_used(level)
      end
    end
  end
  pushed = first + n - cursor
  redis.call('HSET', KEYS[2], 'queued', first + n)
  ring(KEYS[4])
end
redis.call('LTRIM', KEYS[1], n, -1)
return {n, pushed}
