-- Remove cancelled jobs from a pool's arq queue, each only if unchanged and unclaimed
-- (lib/queued.lua): a claimed job is left to its worker, which checks before it starts
-- (begin.lua). A removed job gets its `cancelled` receipt; the conductors are told of
-- the slots given back.
-- KEYS[1] the pool's arq queue, KEYS[2] the pool's in-flight set, KEYS[3] events channel,
--   then per job: its arq job key, its in-progress key, its retry key
-- ARGV: root, now (s), error text, pool name, then per job: arq id, the payload as
--   read, job id, batch, task, envelope
-- Returns per job: 1 removed, 0 left (claimed, or changed since it was read)
--#include cancelling
--#include queued
local root, now, error, pool = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local out, freed = {}, 0
local k = 4
for i = 5, #ARGV, 6 do
  local arq_id, payload, job_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local batch, task, envelope = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  if take_unclaimed(KEYS[1], KEYS[2], arq_id, payload, KEYS[k], KEYS[k + 1], KEYS[k + 2], job_id) then
    cancel_job(root, batch, job_id, task, envelope, now, error)
    freed = freed + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  k = k + 3
end
if freed > 0 then redis.call('PUBLISH', KEYS[3], pool) end
return out
