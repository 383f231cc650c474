-- A worker claims the jobs it read from its pool's queue, all in one step: for each id,
-- arq's claim (its in-progress key, set only when no one has claimed the job and it is
-- still in the queue and due — the checks arq's `Worker.start_jobs` makes under WATCH)
-- and the worker's record that it holds it (its holding hash, which lets the conductor
-- free the claims of a worker that died: lua/release_dead_workers.lua).
-- One script for the whole read instead of four round trips a job; and as a claim is
-- never without its holding record, no claim is left that no worker holds. A take-back
-- (lib/queued.lua) is atomic with this as it is with arq's WATCH/MULTI: whichever runs
-- second sees the other's work (the job gone from the queue, or its claim).
-- A claimed job is also *begun* here, as begin.lua begins it — marked running in
-- `running:<batch>` (who runs it, which try, since when), as the worker's runner would
-- record it — unless its batch or the job itself was cancelled: that job is left to
-- begin.lua, which ends it as cancelled (the rare case keeps its one path). One round
-- trip a job fewer. A payload this script cannot read cheaply (not the conductor's, or
-- over MAX_PAYLOAD bytes) is left to begin.lua too.
-- A job that ran before without finishing (arq's retry counter set: its worker died
-- under it, or it is being retried) is a suspect: it may be a poison pill, which kills
-- the process and every job running beside it. A suspect is claimed only by a worker
-- running nothing else, and alone; the worker then starts nothing beside it. So a pill
-- takes down at most the jobs that ran beside it on its first run, never the same
-- neighbours on every try. Busy workers pass a suspect over; an idle one takes it.
-- KEYS[1] the pool's arq queue, KEYS[2] the worker's holding hash
-- ARGV: arq in-progress key prefix, claim TTL (ms), now (ms, the worker's clock as
--   arq's scores are), pool, arq retry key prefix, 1 when the worker runs nothing
--   else, key root, arq job key prefix, worker id, the running hashes' key prefix
--   (Keys.running of ""), then the arq job ids
-- A claimed job's run also begins here with what arq's `Worker.run_job` reads first
-- (its payload, and its try counter incremented, kept 88400 s as arq keeps it): returned
-- with the claim, so the run starts without another round trip.
-- Returns {per id in order, its queue score when claimed, else false; per id, 1 when
-- begun here, else 0; the position of the suspect claimed (alone), 0 when none; per id,
-- its payload when claimed (false when gone or not claimed); per id, its try counter
-- after this claim's increment (0 when not claimed)}.
--#include cancelling
local MAX_PAYLOAD = 65536
local prefix, ttl, now, pool = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local retry_prefix, idle = ARGV[5], ARGV[6] == '1'
local root, job_prefix, worker, running_prefix = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local t = redis.call('TIME')
local started = tonumber(t[1]) + tonumber(t[2]) / 1e6
local scores, begun, claimed, alone = {}, {}, 0, 0
local payloads, counters = {}, {}

-- begin.lua's work for a job that was not cancelled; false: left to begin.lua
local function begin(payload, tries)
  if not payload or #payload > MAX_PAYLOAD then return false end
  local ok, job = pcall(cjson.decode, payload)
  local envelope = ok and type(job) == 'table' and type(job.a) == 'table' and job.a[1]
  if type(envelope) ~= 'table' then return false end
  local batch, job_id, task = envelope.batch, envelope.id, envelope.task
  if type(batch) ~= 'string' or type(job_id) ~= 'string' or type(task) ~= 'string' then
    return false
  end
  if is_cancelled(root, batch, job_id) then return false end
  -- a receipt-shaped record, as the runner writes it (receipts.Receipt)
  redis.call('HSET', running_prefix .. batch, job_id, cjson.encode({
    job_id = job_id, batch = batch, task = task, status = 'running', pool = pool,
    worker = worker, attempt = tries + 1, started_at = started, ended_at = started,
    duration = 0, error = cjson.null,
  }))
  return true
end

for i = 11, #ARGV do
  local arq_id = ARGV[i]
  local claim = prefix .. arq_id
  local score = redis.call('ZSCORE', KEYS[1], arq_id)
  local due = alone == 0 and score and tonumber(score) ~= 0 and tonumber(score) <= now
  local tries = 0  -- arq's try counter: the runs begun before this one
  if due and redis.call('EXISTS', claim) == 0 then
    tries = tonumber(redis.call('GET', retry_prefix .. arq_id) or '0') or 0
    local suspect = tries >= 1
    if suspect and not (idle and claimed == 0) then
      due = false  -- left for an idle worker
    end
    if due then
      redis.call('SET', claim, '1', 'PX', ttl)
      redis.call('HSET', KEYS[2], arq_id, pool)
      claimed = claimed + 1
      if suspect then alone = i - 10 end
    end
  else
    due = false
  end
  local payload, counter = false, 0
  if due then
    payload = redis.call('GET', job_prefix .. arq_id)
    counter = redis.call('INCR', retry_prefix .. arq_id)
    redis.call('EXPIRE', retry_prefix .. arq_id, 88400)
  end
  scores[#scores + 1] = due and score or false
  begun[#begun + 1] = due and begin(payload, tries) and 1 or 0
  payloads[#payloads + 1] = payload
  counters[#counters + 1] = counter
end
return {scores, begun, alone, payloads, counters}
