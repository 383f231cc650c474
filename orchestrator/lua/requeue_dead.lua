-- Requeue dead-lettered jobs, each one all or nothing: remove its records from the
-- dead-letter list, delete arq's keys for its id (else arq's result-key dedupe drops
-- the re-forward, and its try counter ends the rerun at once), mark its receipt
-- `retrying` (so `verify` counts it pending, not failed), and put its envelope on the
-- ready list, which the conductor serves before any backlog.
--
-- Records are matched by their exact bytes, so of two operators requeueing one job at
-- once only the first requeues it. A job whose arq job key still exists is left alone:
-- a worker has written its dead letter but arq has not finished it yet (deleting the
-- keys then would let arq's late result make the rerun look like a duplicate), or a
-- copy of it is queued again.
-- The conductors' doorbell rings with the jobs requeued, so one takes them at once.
-- The receipt of the run that failed goes to the job's list of earlier runs
-- (`Keys.attempts`), as a retry's does, so that its page still shows it after the rerun.
-- KEYS[1] dead-letter list, KEYS[2] ready list, KEYS[3] doorbell, then per job: its arq
--   job key, its batch's receipts hash, its earlier runs' list, then the ARGV[1] arq
--   keys to delete
-- ARGV[1] arq keys per job, ARGV[2] earlier runs kept, ARGV[3] their TTL (s), then per
--   job: record count n, its n records, its envelope, its id, its receipt as read ("":
--   leave the receipt) and that receipt marked retrying
-- Returns per job: 'requeued', 'gone' (no record of it left) or 'live' (arq holds it)
--#include doorbell
local per_job, kept, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local k, i = 4, 4
local rang = false
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local envelope, job_id, old, new = ARGV[i + n + 1], ARGV[i + n + 2], ARGV[i + n + 3], ARGV[i + n + 4]
  local present = false
  for r = i + 1, i + n do
    if redis.call('LPOS', KEYS[1], ARGV[r]) then
      present = true
      break
    end
  end
  local outcome
  if not present then
    outcome = 'gone'
  elseif redis.call('EXISTS', KEYS[k]) == 1 then
    outcome = 'live'
  else
    for r = i + 1, i + n do
      redis.call('LREM', KEYS[1], 1, ARGV[r])
    end
    redis.call('DEL', unpack(KEYS, k + 3, k + 2 + per_job))
    if old ~= '' and redis.call('HGET', KEYS[k + 1], job_id) == old then
      redis.call('HSET', KEYS[k + 1], job_id, new)
      redis.call('RPUSH', KEYS[k + 2], old)
      redis.call('LTRIM', KEYS[k + 2], -kept, -1)
      redis.call('EXPIRE', KEYS[k + 2], ttl)
    end
    redis.call('RPUSH', KEYS[2], envelope)
    if not rang then
      ring(KEYS[3])
      rang = true
    end
    outcome = 'requeued'
  end
  out[#out + 1] = outcome
  i = i + n + 5
  k = k + 3 + per_job
end
return out
