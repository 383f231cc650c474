-- A worker whose Redis connection was lost gives up the jobs it held, once Redis is
-- back: their claims are dropped so that they run again at once (here or elsewhere)
-- rather than after arq's job timeout, and the try each had begun is given back — an
-- outage is not the job's failure, so it must not use up `max_tries` nor make the job
-- a suspected poison pill (lua/start_jobs.lua), which would run it alone.
-- Only what the worker's holding hash still names: a job the conductor freed meanwhile
-- (lua/release_dead_workers.lua deletes the hash with it) may be another worker's now.
-- KEYS[1] the worker's holding hash; ARGV[1] arq in-progress key prefix, ARGV[2] arq
-- retry key prefix. Returns how many jobs were given up.
local held = redis.call('HKEYS', KEYS[1])
for _, arq_id in ipairs(held) do
  redis.call('DEL', ARGV[1] .. arq_id)
  local tries = ARGV[2] .. arq_id
  if tonumber(redis.call('GET', tries) or '0') > 0 then
    redis.call('DECR', tries)
  end
end
redis.call('DEL', KEYS[1])
return #held
