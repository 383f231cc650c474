-- A worker claims the jobs it read from its pool's queue, all in one step: for each id,
-- arq's claim (its in-progress key, set only when no one has claimed the job and it is
-- still in the queue and due — the checks arq's `Worker.start_jobs` makes under WATCH)
-- and the worker's record that it holds it (its holding hash, which lets the conductor
-- free the claims of a worker that died: lua/release_dead_workers.lua).
-- One script for the whole read instead of four round trips a job; and as a claim is
-- never without its holding record, no claim is left that no worker holds. A take-back
-- (lib/queued.lua) is atomic with this as it is with arq's WATCH/MULTI: whichever runs
-- second sees the other's work (the job gone from the queue, or its claim).
-- A job that ran before without finishing (arq's retry counter set: its worker died
-- under it, or it is being retried) is a suspect: it may be a poison pill, which kills
-- the process and every job running beside it. A suspect is claimed only by a worker
-- running nothing else, and alone; the worker then starts nothing beside it. So a pill
-- takes down at most the jobs that ran beside it on its first run, never the same
-- neighbours on every try. Busy workers pass a suspect over; an idle one takes it.
-- KEYS[1] the pool's arq queue, KEYS[2] the worker's holding hash
-- ARGV: arq in-progress key prefix, claim TTL (ms), now (ms, the worker's clock as
--   arq's scores are), pool, arq retry key prefix, 1 when the worker runs nothing
--   else, then the arq job ids
-- Returns, per id in order, its queue score when claimed, else false; then the position
-- of the suspect claimed (alone), 0 when none.
local prefix, ttl, now, pool = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local retry_prefix, idle = ARGV[5], ARGV[6] == '1'
local scores, claimed, alone = {}, 0, 0
for i = 7, #ARGV do
  local arq_id = ARGV[i]
  local claim = prefix .. arq_id
  local score = redis.call('ZSCORE', KEYS[1], arq_id)
  local due = alone == 0 and score and tonumber(score) ~= 0 and tonumber(score) <= now
  if due and redis.call('EXISTS', claim) == 0 then
    local suspect = tonumber(redis.call('GET', retry_prefix .. arq_id) or '0') >= 1
    if suspect and not (idle and claimed == 0) then
      due = false  -- left for an idle worker
    end
    if due then
      redis.call('SET', claim, '1', 'PX', ttl)
      redis.call('HSET', KEYS[2], arq_id, pool)
      claimed = claimed + 1
      if suspect then alone = i - 6 end
    end
  else
    due = false
  end
  scores[#scores + 1] = due and score or false
end
scores[#scores + 1] = alone
return scores
