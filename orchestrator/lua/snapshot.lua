-- Everything `orchestrator status` shows, read in one atomic round trip (writes nothing).
--
-- Key names come from orchestrator/keys.py: fixed ones as KEYS, per-id ones as prefixes
-- (a Keys method called with an empty id) that the member ids read here complete.
-- Receipts are counted by status with HSCAN under a budget of entries per call, so a
-- huge batch never blocks Redis for long; a scan the budget cut short returns its
-- cursor, and the caller resumes it on its next call. Dead letters of the batches
-- listed are read the same way, by position in the list, under a budget of their own.
-- A backlog's depth sums its priority levels (its own list, and one per level in its
-- levels zset); a backlog that is paused is listed even when nothing was dispatched to it.
-- KEYS[1] backlogs set, KEYS[2] conductors set, KEYS[3] ready list, KEYS[4] deferred
--   zset, KEYS[5] dead-letter list, KEYS[6] batches zset (read newest first, from
--   position first_batch), KEYS[7] no-worker tasks zset,
--   KEYS[8] paused backlogs hash, KEYS[9] paused pools hash
-- ARGV[1] JSON: {backlog_prefix, levels_prefix, level_separator, backlogs: [names],
--   conductor_prefix,
--   processing_prefix, batch_prefix, receipts_prefix, running_prefix, no_worker_prefix,
--   pools: [{name,
--   queue, inflight, workers, worker_prefix, waiting, scaler_state, capacity (its
--   counters), spend: the spend counter of the caller's UTC day}], buckets: [{name, key}], batches:
--   most batches, first_batch: how many newest batches to pass over (a page),
--   budget: most receipts to scan, cursors: {batch: HSCAN cursor to resume},
--   skip: [batches whose counts the caller keeps], order: [batches, the first to be
--   counted first], dead_from: position in the dead-letter list to read on from
--   (0: from the start), dead_budget: most dead letters to read}
-- Returns JSON (floats as strings; an empty list may come back as {}), see status/snapshot.py.
local req = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local out = {time = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))}

-- backlogs: {name, depth, {{level, jobs}…}, time paused or false}
local paused_backlogs, paused_names = {}, {}
local flat = redis.call('HGETALL', KEYS[8])
for i = 1, #flat, 2 do
  paused_backlogs[flat[i]] = flat[i + 1]
  paused_names[#paused_names + 1] = flat[i]
end
out.backlogs = {}
local seen = {}
local function add_backlog(name)
  if not seen[name] then
    seen[name] = true
    local list = req.backlog_prefix .. name
    local depth = redis.call('LLEN', list)
    local levels = {{0, depth}}
    for _, level in ipairs(redis.call('ZRANGE', req.levels_prefix .. name, 0, -1)) do
      local jobs = redis.call('LLEN', list .. req.level_separator .. level)
      levels[#levels + 1] = {tonumber(level), jobs}
      depth = depth + jobs
    end
    out.backlogs[#out.backlogs + 1] = {name, depth, levels, paused_backlogs[name] or false}
  end
end
for _, name in ipairs(req.backlogs) do add_backlog(name) end
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do add_backlog(name) end
for _, name in ipairs(paused_names) do add_backlog(name) end

out.conductors = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  out.conductors[#out.conductors + 1] = {
    id, redis.call('EXISTS', req.conductor_prefix .. id),
    redis.call('LLEN', req.processing_prefix .. id),
  }
end
out.ready = redis.call('LLEN', KEYS[3])
out.deferred = redis.call('ZCARD', KEYS[4])
out.next_due_ms = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2] or false
out.dead = redis.call('LLEN', KEYS[5])

-- jobs no live worker can run, per task: {task, jobs, ms the oldest started waiting}
out.no_worker = {}
local parked = redis.call('ZRANGE', KEYS[7], 0, 99, 'WITHSCORES')
for i = 1, #parked, 2 do
  local task = parked[i]
  out.no_worker[#out.no_worker + 1] = {
    task, redis.call('LLEN', req.no_worker_prefix .. task), parked[i + 1],
  }
end

out.pools = {}
for _, pool in ipairs(req.pools) do
  local workers = {}
  for _, id in ipairs(redis.call('SMEMBERS', pool.workers)) do
    local beat = redis.call('HGETALL', pool.worker_prefix .. id)
    if #beat > 0 then  -- lapsed heartbeats are the conductor's to forget, not ours
      workers[#workers + 1] = beat
    end
  end
  out.pools[#out.pools + 1] = {
    name = pool.name, workers = workers, in_flight = redis.call('ZCARD', pool.inflight),
    queued = redis.call('ZCARD', pool.queue), waiting = redis.call('LLEN', pool.waiting),
    paused_at = redis.call('HGET', KEYS[9], pool.name),
    -- the scaler's last view (it lapses soon after its scaler stops) and the day's spend
    scaler = redis.call('HGETALL', pool.scaler_state), spend = redis.call('GET', pool.spend),
  }
  -- its capacity counters (lib/pools.lua): the prefetch the conductors allow it now,
  -- and the completion rate that sizes it
  local counted = redis.call('HMGET', pool.capacity, 'prefetch', 'rate')
  out.pools[#out.pools].prefetch = counted[1] or false
  out.pools[#out.pools].finish_rate = counted[2] or false
end

out.buckets = {}
for _, bucket in ipairs(req.buckets) do
  out.buckets[#out.buckets + 1] = {bucket.name, redis.call('GET', bucket.key)}
end

local skip = {}
for _, id in ipairs(req.skip) do skip[id] = true end
local first = req.first_batch or 0
local latest = redis.call('ZREVRANGE', KEYS[6], first, first + req.batches - 1, 'WITHSCORES')
out.batch_total = redis.call('ZCARD', KEYS[6])
local batches, to_count = {}, {}
for i = 1, #latest, 2 do
  local id = latest[i]
  local batch = {
    id = id, score = latest[i + 1], record = redis.call('HGETALL', req.batch_prefix .. id),
    receipts = redis.call('HLEN', req.receipts_prefix .. id),
    running = redis.call('HLEN', req.running_prefix .. id),
  }
  batches[#batches + 1] = batch
  if not skip[id] then to_count[#to_count + 1] = batch end
end
-- batches never counted first, smallest first; then those counted longest ago
local rank = {}
for i, id in ipairs(req.order) do rank[id] = i end
table.sort(to_count, function(a, b)
  local ra, rb = rank[a.id] or 0, rank[b.id] or 0
  if ra ~= rb then return ra < rb end
  return a.receipts < b.receipts
end)

local budget = req.budget
for _, batch in ipairs(to_count) do
  if budget <= 0 then break end
  local key, cursor, counts = req.receipts_prefix .. batch.id, req.cursors[batch.id] or '0', {}
  repeat
    local page = redis.call('HSCAN', key, cursor, 'COUNT', 500)
    cursor = page[1]
    local entries = page[2]
    for j = 2, #entries, 2 do
      -- receipts are orjson's compact output; a pattern is far cheaper than a decode
      local status = string.match(entries[j], '"status":"(%a+)"') or 'unknown'
      counts[status] = (counts[status] or 0) + 1
    end
    budget = budget - #entries / 2
  until cursor == '0' or budget <= 0
  batch.cursor, batch.counts = cursor, counts
end
out.batches = batches

-- The dead letters of the batches listed, each as {batch, job id, its receipt's status
-- or ''}. A letter names its batch in its envelope or receipt (the envelope may be the
-- raw text of an invalid payload); a letter that names none (`lost`) is attributed by
-- a derived job id, `<batch>:<line>`. `next` is where to read on, 0 once at the end.
-- Decoding a letter costs several times a pattern, so the letters workers and conductors
-- write are read by pattern: orjson's compact output, the job id first, the envelope
-- (as pydantic orders it) starting with its id and batch. Inside a JSON string a quote
-- is escaped, and the fields before the payload are scalars, so the first
-- `,"payload":{` is the letter's own. Any other letter is decoded.
local listed = {}
for _, batch in ipairs(batches) do listed[batch.id] = true end
local function batch_of(holder)
  if type(holder) == 'string' then
    local ok, parsed = pcall(cjson.decode, holder)
    holder = ok and parsed or nil
  end
  if type(holder) == 'table' and type(holder.batch) == 'string' then return holder.batch end
  return nil
end
local function attribute(raw)
  local id = string.match(raw, '^{"job_id":"([^"\\]*)"')
  if id then
    local at = string.find(raw, ',"payload":{', 1, true)
    local batch = at and string.match(raw, '^,"payload":{"id":"[^"\\]*","batch":"([^"\\]*)"', at)
    if batch then return id, batch end
  end
  local ok, letter = pcall(cjson.decode, raw)
  id = ok and type(letter) == 'table' and letter.job_id
  if type(id) ~= 'string' then return nil, nil end
  return id, batch_of(letter.payload) or batch_of(letter.receipt) or string.match(id, '^(.+):%d+$')
end
local scan, from, left = {letters = {}}, req.dead_from, req.dead_budget
while true do
  if left <= 0 then
    scan.next = from
    break
  end
  local want = math.min(left, 500)
  local letters = redis.call('LRANGE', KEYS[5], from, from + want - 1)
  for _, raw in ipairs(letters) do
    local id, batch = attribute(raw)
    if batch and listed[batch] then
      local receipt = redis.call('HGET', req.receipts_prefix .. batch, id)
      local status = receipt and string.match(receipt, '"status":"(%a+)"') or ''
      scan.letters[#scan.letters + 1] = {batch, id, status}
    end
  end
  from, left = from + #letters, left - #letters
  if #letters < want then
    scan.next = 0
    break
  end
end
out.dead_scan = scan
return cjson.encode(out)
