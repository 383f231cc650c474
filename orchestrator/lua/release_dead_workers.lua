-- Free the jobs of workers that died mid-run, for other workers to run at once.
--
-- arq marks a running job with an in-progress key that outlives its worker by the job
-- timeout; a worker that is gone (its heartbeat lapsed) cannot finish it, so the key is
-- deleted here and the job, still in its pool's queue, is taken by the next poll. Its
-- arq try counter keeps counting, so a job that kills every worker that runs it ends
-- up dead-lettered as interrupted after max_tries runs.
--
-- A worker records what it holds right after arq claims it; a process that dies in
-- between leaves a claim that no worker holds. Such a claim, older than ARGV[4] ms, is
-- freed too (the first ARGV[5] jobs of each pool's queue are looked at).
-- KEYS[1] holders hash (worker id -> pool); ARGV[1] key root, ARGV[2] arq in-progress
-- key prefix, ARGV[3] arq in-progress timeout (ms), ARGV[4] grace (ms), ARGV[5] how many
-- queued jobs to look at per pool, ARGV[6 ..] pool queues as "pool=queue key"
-- Returns {freed arq job ids, pools woken}.
-- A dead worker's share of its pool's capacity counters goes too, at once, rather than
-- when its deadline comes up in an intake round (lib/pools.lua).
--#include pools
local root, prefix = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claim_ms, grace_ms, scan = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local freed, pools, woken = {}, {}, {}

local function free(arq_id, pool)
  redis.call('DEL', prefix .. arq_id)
  freed[#freed + 1] = arq_id
  if not woken[pool] then
    woken[pool] = true
    pools[#pools + 1] = pool
  end
end

local live, dead = {}, {}
local holders = redis.call('HGETALL', KEYS[1])
for i = 1, #holders, 2 do
  local worker, pool = holders[i], holders[i + 1]
  local holding = root .. ':holding:' .. worker
  if redis.call('EXISTS', root .. ':worker:' .. pool .. ':' .. worker) == 0 then
    dead[#dead + 1] = {worker, pool, holding}
  else
    live[#live + 1] = holding
  end
end

local function held_by_the_living(arq_id)
  for _, holding in ipairs(live) do
    if redis.call('HEXISTS', holding, arq_id) == 1 then
      return true
    end
  end
  return false
end

-- A dead worker's record may be stale: the job it names may have been put back (a
-- stop, a lost connection) and claimed by a live worker since, whose claim stands.
for _, gone in ipairs(dead) do
  local worker, pool, holding = gone[1], gone[2], gone[3]
  for _, arq_id in ipairs(redis.call('HKEYS', holding)) do
    if not held_by_the_living(arq_id) then
      free(arq_id, pool)
    end
  end
  redis.call('DEL', holding)
  redis.call('HDEL', KEYS[1], worker)
  count_worker(root, pool, worker, now_ms)
end

for i = 6, #ARGV do
  local pool, queue = string.match(ARGV[i], '^([^=]+)=(.+)$')
  for _, arq_id in ipairs(redis.call('ZRANGE', queue, 0, scan - 1)) do
    local left = redis.call('PTTL', prefix .. arq_id)
    if left > 0 and claim_ms - left > grace_ms then
      if not held_by_the_living(arq_id) then
        free(arq_id, pool)
      end
    end
  end
end

for _, pool in ipairs(pools) do
  redis.call('PUBLISH', root .. ':wake:' .. pool, 'freed')
end
return {freed, pools}
