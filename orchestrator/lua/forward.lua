-- Route a conductor's batch of taken jobs, atomically: rate limits, pool choice,
-- forward into the pool's arq queue, and ack (remove from the processing list).
--
-- Rate limits are GCRA buckets on Redis's clock. A job's own buckets (task and meta)
-- are *reserved*: a job that cannot pass now is given the next free instant of every
-- bucket — the bucket's TAT, advanced by one interval per job, so each deferred job has
-- an instant of its own — and deferred until just before then, marked as paid. When
-- due it passes without a second deferral: a long rate-limited backlog costs one
-- deferral per job, and jobs go out at the rate, not at the pace of the conductor's
-- rounds.
-- The forwards themselves are checked against a second GCRA state per bucket
-- (`…:sent`), with the bucket's burst and no more: a sequence of forwards passes that
-- check exactly when no window of t seconds holds more than burst + rate·t of them, so
-- the bound holds whatever the conductors' timing, however many share the bucket.
-- (A bucket's `jitter`, 0 unless configured, loosens that check by as many jobs.)
--
-- A forward's instant is the instant its job becomes *due* in the pool's queue — its
-- score there, which no worker starts it before — not the instant of this call: a job
-- whose instant is at most `lead` (ARGV[8]) s away is forwarded now, due then. So the
-- instants are exactly the bucket's: a conductor a little late, by a timer or a busy
-- core, moves no instant, where with burst 1 (no room for any lateness) a forward late
-- by x would delay every one after it by x. A paid job whose instant is further off,
-- but within ARGV[7] s, is *paced*: it stays in the processing list and the conductor
-- routes it again shortly before the instant given (`paced`; several paced at once
-- get successive instants, as their forwards would have them). One further off (a
-- conductor that stalled) takes a new instant of its own: a second deferral, which
-- lets the bucket catch up by the interval it leaves unused. A deferred job is scored
-- `early` (ARGV[9]) s before its instant, so that it is back in line in time for it
-- (and then paced). A pool's bucket only decides whether that pool may take the job at
-- its instant; a job it holds back is deferred until the bucket allows it within `lead`.
--
-- A pool takes a job only if its live workers all announce the job's task: a job no
-- pool it may use can run waits on `<root>:no_worker:<task>` (`…@<pool>` when a rule or
-- pin allows one pool only) until intake.lua sees such a worker. While the conductor
-- is young (`hold`), a pool with no live worker yet blocks the pools after it: at start
-- a cloud worker that announced itself first must not take what metal is about to.
--
-- A job of a cancelled batch, or itself cancelled, goes nowhere: it gets its `cancelled`
-- receipt here. A paused pool counts as full, so spillover applies as if it were.
-- A pool's room is its live slots plus its prefetch, less its jobs in flight, read from
-- its capacity counters as intake.lua corrected them this round (lib/pools.lua).
-- A pool's queue is scored by the job's priority (see `arq_jobs.queue_score`), so arq
-- starts the higher first; a job due later than now is scored with its instant (a
-- score is both when a job may start and its rank): once due it ranks by that instant,
-- its priority having ordered it in the backlogs and at intake. What it may wait behind
-- in the queue is the pool's prefetch at most, the jobs the pool starts within
-- `prefetch_seconds`, since the conductor forwards no more than room for.
--
-- KEYS[1] processing list, KEYS[2] ready list, KEYS[3] deferred zset, KEYS[4] dead-letter
--   list, KEYS[5] batches zset, KEYS[6] zset of the tasks jobs wait for a worker of,
--   KEYS[7] hash of the paused pools
-- ARGV: root, now (ms, client clock, as arq scores use), arq job prefix, arq result
--   prefix, arq expiry (ms), hold ("1": an empty pool blocks later ones), the most a
--   paid job is paced (s), lead (s), early (s), pool count, then per pool: name, queue,
--   max_in_flight (0: none), bucket rate (0: none), bucket burst; then per job: task,
--   the envelope to store, ad-hoc batch and its backlog (both "" unless the job came as
--   a bare manifest line, which is then recorded in that batch), raw payload as taken,
--   job id, arq job id, arq payload, candidate pools (comma-separated), buckets
--   ("name rate burst jitter" joined by ";", or ""), paid envelope (stored instead of
--   raw once its buckets are paid), pinned ("1": may only run on its candidate),
--   spill-at (ms when a later pool becomes eligible, 0: none), paid ("1": reserved
--   already), batch, score in the pool's queue
-- Returns per job: outcome, detail (`forwarded`: "<pool> <instant due, s>"; else the
-- pool, or ms due, to the microsecond; `paced`: the job is back in the processing list,
-- to be routed again then); then Redis's time of this call (s). Each pool that
-- received jobs is told so on its wake channel (`<root>:wake:<pool>`), so its workers
-- poll at once: the message is "<jobs> <the highest score of a job not due yet, or 0>".
--#include pools
--#include cancelling
local root = ARGV[1]
local now_ms = tonumber(ARGV[2])
local job_prefix, result_prefix, expires = ARGV[3], ARGV[4], tonumber(ARGV[5])
local hold = ARGV[6] == '1'
local pace_at_most = tonumber(ARGV[7])
local lead, early = tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

-- a deferred-set score: ms, to the microsecond (a whole ms is half an interval at 500/s)
local function due_ms(at)
  return string.format('%.3f', at * 1000)
end

-- The instants promised this call to paced jobs, per `…:sent` key: each paced job of
-- a bucket gets the next one, not all the same (at burst 1, one job per instant).
local promised = {}

local function tat_of(key)
  local tat = tonumber(redis.call('GET', key) or '0')
  if promised[key] and promised[key] > tat then tat = promised[key] end
  if tat < now then tat = now end
  return tat
end

-- stored to the microsecond, rounded up: a TAT read back early by a fraction of a
-- microsecond would let a forward in that much early
local function store_tat(key, tat)
  local us = math.ceil(tat * 1e6 - 1e-3)
  redis.call('SET', key, string.format('%d.%06d', math.floor(us / 1e6), us % 1e6),
    'PX', math.ceil((tat - now) * 1000) + 1000)
end

-- earliest instant (>= now) at which one more event conforms to the bucket, with
-- `slack` intervals of tolerance
local function allow_at(key, rate, burst, slack)
  local allowed = tat_of(key) - (burst - 1 + (slack or 0)) / rate
  if allowed < now then allowed = now end
  return allowed
end

-- the earliest instant at which every bucket of the job allows it: its reservations
-- (`key`), or its forwards (`sent`, with the bucket's jitter)
local function all_allow_at(buckets, field)
  local at = now
  for _, b in ipairs(buckets) do
    local allowed = allow_at(b[field], b.rate, b.burst, field == 'sent' and b.jitter or 0)
    if allowed > at then at = allowed end
  end
  return at
end

local function charge(key, rate, at)
  local tat = tat_of(key)
  if tat < at then tat = at end
  store_tat(key, tat + 1 / rate)
end

local pools = {}
local i = 11
for _ = 1, tonumber(ARGV[10]) do
  local name = ARGV[i]
  local slots, tasks, prefetch = pool_capacity(root, name)  -- as intake.lua corrected it
  local inflight_key = root .. ':inflight:' .. name
  local inflight = redis.call('ZCARD', inflight_key)
  local free = slots + prefetch - inflight
  local cap = tonumber(ARGV[i + 2])
  if cap > 0 and cap - inflight < free then free = cap - inflight end
  if redis.call('HEXISTS', KEYS[7], name) == 1 then free = 0 end
  pools[name] = {
    queue = ARGV[i + 1], free = free, inflight = inflight_key,
    rate = tonumber(ARGV[i + 3]), burst = tonumber(ARGV[i + 4]),
    bucket = root .. ':bucket:pool:' .. name,
    tasks = tasks, runs = {},
  }
  i = i + 5
end

local out = {}
while i <= #ARGV do
  local task, envelope, adhoc, adhoc_backlog = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local raw, job_id, arq_id, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local candidates, buckets, paid = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local pinned, spill_at = ARGV[i + 7] == '1', tonumber(ARGV[i + 8])
  local is_paid = ARGV[i + 9] == '1'
  local batch, score = ARGV[i + 10], ARGV[i + 11]
  i = i + 12
  local stored = envelope
  local outcome, detail
  -- Only the conductor still holding the job may route it: a peer may have recovered
  -- it (our heartbeat lapsed), and then the copy on the ready list is the live one.
  if redis.call('LREM', KEYS[1], 1, raw) == 0 then
    outcome, detail = 'stale', ''
  end

  -- A bare manifest line a producer pushed: from here on it is this envelope. Its id is
  -- recorded in its batch, so a producer that sends it again does not run it twice, and
  -- a task no live worker of any pool announces is refused as dispatch would refuse it.
  if not outcome and adhoc ~= '' then
    local batch_key = root .. ':batch:' .. adhoc
    if redis.call('SADD', root .. ':batch_ids:' .. adhoc, job_id) == 0 then
      outcome, detail = 'duplicate', ''
    else
      redis.call('HINCRBY', batch_key, 'total', 1)
      redis.call('HINCRBY', batch_key, 'queued', 1)
      if redis.call('HSETNX', batch_key, 'created_at', string.format('%.6f', now)) == 1 then
        redis.call('HSET', batch_key, 'backlog', adhoc_backlog, 'adhoc', '1', 'complete', '1')
        redis.call('ZADD', KEYS[5], 'NX', string.format('%.6f', now), adhoc)
      end
      local known = false
      for _, pool in pairs(pools) do
        if pool_runs(pool.tasks, pool.runs, task) then
          known = true
          break
        end
      end
      if not known then
        outcome, detail = 'unknown_task', ''
        local error = "task: unknown task '" .. task .. "' (no live worker runs it)"
        redis.call('RPUSH', KEYS[4], '{"job_id":' .. cjson.encode(job_id)
          .. ',"reason":"unknown_task","error":' .. cjson.encode(error)
          .. ',"at":' .. string.format('%.6f', now) .. ',"payload":' .. envelope .. '}')
      end
    end
  end

  if not outcome and is_cancelled(root, batch, job_id) then
    outcome, detail = 'cancelled', ''
    cancel_job(root, batch, job_id, task, envelope, now, 'cancelled before it started')
  end

  local parsed = {}
  local due = now  -- the instant the job becomes due in the pool's queue
  if not outcome and buckets ~= '' then
    for spec in string.gmatch(buckets, '[^;]+') do
      local name, rate, burst, jitter = string.match(spec, '^(%S+) (%S+) (%S+) (%S+)$')
      local key = root .. ':bucket:' .. name
      parsed[#parsed + 1] = {
        key = key, sent = key .. ':sent',
        rate = tonumber(rate), burst = tonumber(burst), jitter = tonumber(jitter),
      }
    end
    stored = paid
    -- Reserve an instant (once), then check that the forward itself conforms.
    local at, reserve = now, not is_paid
    if reserve then
      at = all_allow_at(parsed, 'key')
    end
    if at <= now + lead then
      local sent_at = math.max(all_allow_at(parsed, 'sent'), at)
      if sent_at <= now + lead then
        due = sent_at
      elseif is_paid and sent_at - now <= pace_at_most then
        outcome, detail = 'paced', due_ms(sent_at)
        redis.call('RPUSH', KEYS[1], raw)
        for _, b in ipairs(parsed) do
          local tat = tat_of(b.sent)
          if tat < sent_at then tat = sent_at end
          promised[b.sent] = tat + 1 / b.rate
        end
      else  -- too far behind the forwards: an instant of its own
        at, reserve = math.max(all_allow_at(parsed, 'key'), sent_at), true
      end
    end
    if reserve then
      for _, b in ipairs(parsed) do charge(b.key, b.rate, at) end
    end
    if at > now + lead then
      outcome, detail = 'rate_limited', due_ms(at)
      redis.call('ZADD', KEYS[3], due_ms(at - early), paid)
    end
  end

  if not outcome then
    local chosen, pool_wait, capable, held
    for name in string.gmatch(candidates, '[^,]+') do
      local pool = pools[name]
      if pool and hold and #pool.tasks == 0 and not pinned then
        held = true  -- this pool has not announced itself yet: later ones must wait
        break
      end
      local runs = pool and pool_runs(pool.tasks, pool.runs, task)
      capable = capable or runs
      if runs and pool.free > 0 then
        if pool.rate > 0 then
          local allowed = allow_at(pool.bucket, pool.rate, pool.burst)
          if allowed <= now + lead then
            if allowed > due then due = allowed end
            charge(pool.bucket, pool.rate, due)
            chosen = name
            break
          elseif not pool_wait or allowed < pool_wait then
            pool_wait = allowed
          end
        else
          chosen = name
          break
        end
      end
    end
    if chosen then
      local pool = pools[chosen]
      if redis.call('EXISTS', job_prefix .. arq_id, result_prefix .. arq_id) > 0 then
        outcome, detail = 'duplicate', chosen
      else
        redis.call('SET', job_prefix .. arq_id, payload, 'PX', expires)
        if due > now then
          -- On Redis's clock, as the worker's is assumed to be; in whole ms as arq's
          -- scores are, and as arq reads them (due once the rounded clock reaches it):
          -- the first whole ms at which that rounding is past the instant.
          local at_ms = math.ceil(due * 1000 + 0.5)
          score = string.format('%d', at_ms)
          pool.last = math.max(pool.last or 0, at_ms)
        end
        redis.call('ZADD', pool.queue, score, arq_id)
        redis.call('ZADD', pool.inflight, now_ms, job_id)
        for _, b in ipairs(parsed) do charge(b.sent, b.rate, due) end
        pool.free = pool.free - 1
        pool.sent = (pool.sent or 0) + 1
        outcome, detail = 'forwarded', chosen .. ' ' .. string.format('%.6f', due)
      end
    elseif pool_wait then
      outcome, detail = 'pool_rate_limited', due_ms(pool_wait)
      -- back in line once the pool's bucket allows it within the lead
      redis.call('ZADD', KEYS[3], due_ms(pool_wait - lead), stored)
    elseif held then
      outcome, detail = 'full', ''
      redis.call('LPUSH', KEYS[2], stored)
    elseif not capable and spill_at == 0 then
      local member = pinned and (task .. '@' .. candidates) or task
      outcome, detail = 'no_worker', member
      redis.call('RPUSH', root .. ':no_worker:' .. member, stored)
      redis.call('ZADD', KEYS[6], 'NX', now_ms, member)
    elseif spill_at > 0 then
      -- back to the head of the line: metal may free a slot before the spill time
      outcome, detail = 'spill_wait', spill_at
      redis.call('LPUSH', KEYS[2], stored)
    elseif pinned then
      local first = string.match(candidates, '^[^,]+')
      outcome, detail = 'waiting', first
      redis.call('RPUSH', root .. ':waiting:' .. first, stored)
    else
      outcome, detail = 'full', ''
      redis.call('LPUSH', KEYS[2], stored)
    end
  end
  out[#out + 1] = outcome
  out[#out + 1] = detail
end
for name, pool in pairs(pools) do
  if pool.sent then
    redis.call('PUBLISH', root .. ':wake:' .. name,
      pool.sent .. ' ' .. string.format('%d', pool.last or 0))
  end
end
out[#out + 1] = string.format('%.6f', now)
return out
