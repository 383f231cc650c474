-- A worker about to run a job: one atomic step that either marks it running or, when
-- it was cancelled meanwhile, ends it as cancelled without running it. This is what
-- makes `cancel` final: once it returned, a job that was still on its way anywhere (in
-- a queue, claimed by a worker, between two structures) reaches this check first.
-- KEYS[1] the batch's hash of running jobs, KEYS[2] the pool's in-flight set, KEYS[3] the
--   worker's holding hash, KEYS[4] events channel
-- ARGV: root, batch, job id, task, envelope, now (s), what runs it (JSON), arq id, pool
-- Returns 1: run it; 0: cancelled
--#include cancelling
local root, batch, job_id, task = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local envelope, now = ARGV[5], tonumber(ARGV[6])
if is_cancelled(root, batch, job_id) then
  cancel_job(root, batch, job_id, task, envelope, now, 'cancelled before it started')
  -- a record an earlier claim left (its run never came, start_jobs.lua): not running
  redis.call('HDEL', KEYS[1], job_id)
  redis.call('ZREM', KEYS[2], job_id)
  redis.call('HDEL', KEYS[3], ARGV[8])
  redis.call('PUBLISH', KEYS[4], ARGV[9])
  return 0
end
redis.call('HSET', KEYS[1], job_id, ARGV[7])
return 1
