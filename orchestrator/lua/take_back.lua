-- Take back from a paused pool's arq queue the jobs no worker has claimed yet, onto the
-- ready list, so that they run elsewhere instead of waiting for the pool's resume (each
-- only if unchanged and unclaimed: lib/queued.lua).
-- KEYS[1] the pool's arq queue, KEYS[2] its in-flight zset, KEYS[3] ready list,
--   KEYS[4] events channel, KEYS[5] the conductors' doorbell (rung when jobs came back,
--   so one takes them at once), then per job:
--   its arq job key, its in-progress key, its retry key
-- ARGV[1] the pool's name, then per job: arq job id, payload as read, job id, the
--   envelope to queue again
-- Returns how many jobs moved.
--#include queued
--#include doorbell
local moved, k = 0, 6
for i = 2, #ARGV, 4 do
  local arq_id, payload, job_id, envelope = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if take_unclaimed(KEYS[1], KEYS[2], arq_id, payload, KEYS[k], KEYS[k + 1], KEYS[k + 2], job_id) then
    redis.call('RPUSH', KEYS[3], envelope)
    moved = moved + 1
  end
  k = k + 3
end
if moved > 0 then
  ring(KEYS[5])
  redis.call('PUBLISH', KEYS[4], ARGV[1])
end
return moved
