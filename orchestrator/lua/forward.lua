-- Route a conductor's batch of taken jobs, atomically: rate limits, pool choice,
-- forward into the pool's arq queue, and ack (remove from the processing list).
--
-- Rate limits are GCRA buckets on Redis's clock. A job's own buckets (task and meta)
-- are *reserved*: a job that cannot pass now is given the next free instant and
-- deferred until exactly then, marked as paid, so a long rate-limited backlog costs one
-- deferral per job rather than a retry storm. The forwards themselves are checked
-- against a second GCRA state per bucket (`…:sent`), so they conform even when a
-- conductor fell behind and jobs due at different instants come back together: such a
-- job is deferred again by the little it needs, without a new reservation. A pool's
-- bucket only decides whether that pool may take the job now.
--
-- A pool takes a job only if its live workers all announce the job's task: a job no
-- pool it may use can run waits on `<root>:no_worker:<task>` (`…@<pool>` when a rule or
-- pin allows one pool only) until intake.lua sees such a worker. While the conductor
-- is young (`hold`), a pool with no live worker yet blocks the pools after it: at start
-- a cloud worker that announced itself first must not take what metal is about to.
--
-- A job of a cancelled batch, or itself cancelled, goes nowhere: it gets its `cancelled`
-- receipt here. A paused pool counts as full, so spillover applies as if it were.
-- A pool's queue is scored by the job's priority (see `arq_jobs.queue_score`), so arq
-- starts the higher first.
--
-- KEYS[1] processing list, KEYS[2] ready list, KEYS[3] deferred zset, KEYS[4] dead-letter
--   list, KEYS[5] batches zset, KEYS[6] zset of the tasks jobs wait for a worker of,
--   KEYS[7] hash of the paused pools
-- ARGV: root, now (ms, client clock, as arq scores use), arq job prefix, arq result
--   prefix, arq expiry (ms), hold ("1": an empty pool blocks later ones), pool count,
--   then per pool: name, queue, max_in_flight
--   (0: none), bucket rate (0: none), bucket burst; then per job: task, the envelope to
--   store, ad-hoc batch and its backlog (both "" unless the job came as a bare manifest
--   line, which is then recorded in that batch), raw payload as taken, job id,
--   arq job id, arq payload, candidate pools (comma-separated), buckets
--   ("name rate burst" joined by ";", or ""), paid envelope (stored instead of raw
--   once its buckets are paid), pinned ("1": may only run on its candidate), spill-at
--   (ms when a later pool becomes eligible, 0: none), paid ("1": reserved already)
--   batch, score in the pool's queue
-- Returns per job: outcome, detail (pool, or ms due). Each pool that received jobs is
-- told so on its wake channel (`<root>:wake:<pool>`), so its workers poll at once.
--#include pools
--#include cancelling
local root = ARGV[1]
local now_ms = tonumber(ARGV[2])
local job_prefix, result_prefix, expires = ARGV[3], ARGV[4], tonumber(ARGV[5])
local hold = ARGV[6] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

local function tat_of(key)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  return tat
end

local function store_tat(key, tat)
  redis.call('SET', key, string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end

-- earliest instant (>= now) at which one more event conforms to the bucket
local function allow_at(key, rate, burst)
  local allowed = tat_of(key) - (burst - 1) / rate
  if allowed < now then allowed = now end
  return allowed
end

-- the earliest instant at which every bucket of the job allows it (`field`: key or sent)
local function all_allow_at(buckets, field)
  local at = now
  for _, b in ipairs(buckets) do
    local allowed = allow_at(b[field], b.rate, b.burst)
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
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  local name = ARGV[i]
  local slots, tasks = live_workers(root, name, false)
  local inflight_key = root .. ':inflight:' .. name
  local inflight = redis.call('ZCARD', inflight_key)
  local free = slots - inflight
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
  if not outcome and buckets ~= '' then
    for spec in string.gmatch(buckets, '[^;]+') do
      local name, rate, burst = string.match(spec, '^(%S+) (%S+) (%S+)$')
      local key = root .. ':bucket:' .. name
      parsed[#parsed + 1] = {key = key, sent = key .. ':sent', rate = tonumber(rate), burst = tonumber(burst)}
    end
    stored = paid
    -- Reserve (once), then check that the forward itself conforms.
    local at = now
    if not is_paid then
      at = all_allow_at(parsed, 'key')
      for _, b in ipairs(parsed) do charge(b.key, b.rate, at) end
    end
    if at <= now then
      at = all_allow_at(parsed, 'sent')
    end
    if at > now then
      outcome, detail = 'rate_limited', math.ceil(at * 1000)
      redis.call('ZADD', KEYS[3], detail, paid)
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
          if allowed <= now then
            charge(pool.bucket, pool.rate, now)
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
        redis.call('ZADD', pool.queue, score, arq_id)
        redis.call('ZADD', pool.inflight, now_ms, job_id)
        for _, b in ipairs(parsed) do charge(b.sent, b.rate, now) end
        pool.free = pool.free - 1
        pool.sent = (pool.sent or 0) + 1
        outcome, detail = 'forwarded', chosen
      end
    elseif pool_wait then
      outcome, detail = 'pool_rate_limited', math.ceil(pool_wait * 1000)
      redis.call('ZADD', KEYS[3], detail, stored)
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
    redis.call('PUBLISH', root .. ':wake:' .. name, pool.sent)
  end
end
return out
