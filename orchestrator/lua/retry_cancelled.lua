-- Put a batch's cancelled jobs back in line, each all or nothing, and lift the batch's
-- cancel (so the conductor and workers stop refusing its jobs): clear arq's keys for the
-- job (else arq's result dedupe drops it, or its old try count ends it), drop its
-- `cancelled` receipt (it is pending again), and put its envelope on the ready list,
-- which conductors serve first. A job is matched by its envelope as the caller read it,
-- so of two operators retrying at once only the first requeues it; one arq still holds
-- is left alone.
-- KEYS[1] batch hash, KEYS[2] the batch's cancelled hash, KEYS[3] its receipts hash,
--   KEYS[4] stop_running hash, KEYS[5] ready list, KEYS[6] the conductors' doorbell (rung
--   with the jobs requeued, so one takes them at once), then per job the ARGV[2] arq keys
--   (the job key first)
-- ARGV: batch, arq keys per job, then per job: id, envelope as read, envelope to queue
-- Returns per job: requeued | gone (retried by someone else) | live (arq holds it) |
--   ended (its receipt is not `cancelled`: it ran after all) | refused (no envelope)
--#include doorbell
local batch, per_job = ARGV[1], tonumber(ARGV[2])
redis.call('HDEL', KEYS[1], 'cancelled_at')
redis.call('HDEL', KEYS[4], batch)
local out = {}
local k = 7
local rang = false
for i = 3, #ARGV, 3 do
  local job_id, read, envelope = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local outcome
  local receipt = redis.call('HGET', KEYS[3], job_id)
  local ok, parsed = pcall(cjson.decode, receipt or 'null')
  local status = ok and type(parsed) == 'table' and parsed.status or nil
  if redis.call('HGET', KEYS[2], job_id) ~= read then
    outcome = 'gone'
  elseif status ~= 'cancelled' then
    outcome = 'ended'
    redis.call('HDEL', KEYS[2], job_id)
  elseif envelope == '' then
    outcome = 'refused'
  elseif redis.call('EXISTS', KEYS[k]) == 1 then
    outcome = 'live'
  else
    redis.call('DEL', unpack(KEYS, k, k + per_job - 1))
    redis.call('HDEL', KEYS[3], job_id)
    redis.call('HDEL', KEYS[2], job_id)
    redis.call('HDEL', KEYS[4], batch .. ' ' .. job_id)
    redis.call('RPUSH', KEYS[5], envelope)
    if not rang then
      ring(KEYS[6])
      rang = true
    end
    outcome = 'requeued'
  end
  out[#out + 1] = outcome
  k = k + per_job
end
return out
