-- Shared by take_back.lua (a paused pool's jobs go elsewhere) and cancel_queued.lua:
-- taking a job back out of a pool's arq queue before any worker starts it.

-- Take the job out only if its payload is still the bytes the caller read and no worker
-- has claimed it (arq's in-progress key): a claimed job stays with its worker. Workers
-- claim in one script (start_jobs.lua), which checks that the job is still in the queue
-- and unclaimed: whichever of the two runs second sees the other's work, so no worker
-- starts a job that has gone (arq would record a result for it, and the id's next
-- forward would be dropped as a duplicate). The claim key is still touched before it
-- is deleted, so that a client claiming as arq itself does (WATCH, then MULTI) fails
-- its MULTI. The job's in-flight slot is given back. Returns true when the job was taken.
local function take_unclaimed(queue, inflight, arq_id, payload, job_key, claim, retries, job_id)
  if redis.call('GET', job_key) ~= payload or redis.call('EXISTS', claim) == 1
      or redis.call('ZREM', queue, arq_id) == 0 then
    return false
  end
  redis.call('SET', claim, 'taken back', 'PX', 1)
  redis.call('DEL', claim, job_key, retries)
  redis.call('ZREM', inflight, job_id)
  return true
end
