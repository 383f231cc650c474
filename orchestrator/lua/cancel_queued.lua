-- Remove cancelled jobs from a pool's arq queue, each only if it is still exactly as
-- the caller read it and no worker has claimed it: a claimed job is left to its worker,
-- which checks before it starts (begin.lua). A removed job gives its in-flight slot
-- back and the conductors are told.
-- KEYS[1] the pool's arq queue, KEYS[2] the pool's in-flight set, KEYS[3] events channel,
--   then per job: its arq job key, its in-progress key, its retry key
-- ARGV: root, now (s), error text, pool name, then per job: arq id, the payload as
--   read, job id, batch, task, envelope
-- Returns per job: 1 removed, 0 left (claimed, or changed since it was read)
--#include cancelling
local root, now, error, pool = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local out, freed = {}, 0
local k = 4
for i = 5, #ARGV, 6 do
  local arq_id, payload, job_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local batch, task, envelope = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local job_key, claim, retries = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if redis.call('GET', job_key) == payload and redis.call('EXISTS', claim) == 0
      and redis.call('ZREM', KEYS[1], arq_id) == 1 then
    -- a worker between arq's WATCH of the claim and its MULTI must fail that MULTI
    -- (see take_back.lua): touching the claim does it
    redis.call('SET', claim, 'cancelled', 'PX', 1)
    redis.call('DEL', claim, job_key, retries)
    redis.call('ZREM', KEYS[2], job_id)
    cancel_job(root, batch, job_id, task, envelope, now, error)
    freed = freed + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if freed > 0 then redis.call('PUBLISH', KEYS[3], pool) end
return out
