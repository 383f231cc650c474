-- Take back from a paused pool's arq queue the jobs no worker has claimed yet, onto the
-- ready list, so that they run elsewhere instead of waiting for the pool's resume.
--
-- The caller read each job's payload and envelope; a job moves only if it is still in
-- the queue with those very bytes and arq's in-progress claim on it does not exist: a
-- job a worker claimed finishes where it is. A worker may stand between its WATCH of the
-- claim and the MULTI that sets it (arq's claim, see arq_worker.py): touching the claim here makes
-- that MULTI fail, so no worker starts a job that has gone (arq would record a result
-- for it, and the id's next forward would be dropped as a duplicate).
-- KEYS[1] the pool's arq queue, KEYS[2] its in-flight zset, KEYS[3] ready list,
--   KEYS[4] events channel (conductors look again when jobs came back), then per job:
--   its arq job key, its in-progress key, its retry key
-- ARGV[1] the pool's name, then per job: arq job id, payload as read, job id, the
--   envelope to queue again
-- Returns how many jobs moved.
local moved, k = 0, 5
for i = 2, #ARGV, 4 do
  local arq_id, payload, job_id, envelope = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local job_key, claim, retries = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if redis.call('GET', job_key) == payload and redis.call('EXISTS', claim) == 0
      and redis.call('ZREM', KEYS[1], arq_id) == 1 then
    redis.call('SET', claim, 'taken back', 'PX', 1)
    redis.call('DEL', claim, job_key, retries)
    redis.call('ZREM', KEYS[2], job_id)
    redis.call('RPUSH', KEYS[3], envelope)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('PUBLISH', KEYS[4], ARGV[1])
end
return moved
