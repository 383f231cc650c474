-- Everything `orchestrator status` shows, read in one atomic round trip (writes nothing).
--
-- Key names come from orchestrator/keys.py: fixed ones as KEYS, per-id ones as prefixes
-- (a Keys method called with an empty id) that the member ids read here complete.
-- Receipts are counted by status with HSCAN under a budget of entries per call, so a
-- huge batch never blocks Redis for long; a scan the budget cut short returns its
-- cursor, and the caller resumes it on its next call.
-- KEYS[1] backlogs set, KEYS[2] conductors set, KEYS[3] ready list, KEYS[4] deferred
--   zset, KEYS[5] dead-letter list, KEYS[6] batches zset
-- ARGV[1] JSON: {backlog_prefix, backlogs: [names], conductor_prefix,
--   processing_prefix, batch_prefix, receipts_prefix, pools: [{name, queue, inflight,
--   workers, worker_prefix, waiting}], buckets: [{name, key}], batches: most batches,
--   budget: most receipts to scan, cursors: {batch: HSCAN cursor to resume},
--   skip: [batches whose counts the caller keeps], order: [batches, the first to be
--   counted first]}
-- Returns JSON (floats as strings; an empty list may come back as {}), see status.py.
local req = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local out = {time = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))}

out.backlogs = {}
local seen = {}
local function add_backlog(name)
  if not seen[name] then
    seen[name] = true
    out.backlogs[#out.backlogs + 1] = {name, redis.call('LLEN', req.backlog_prefix .. name)}
  end
end
for _, name in ipairs(req.backlogs) do add_backlog(name) end
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do add_backlog(name) end

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
  }
end

out.buckets = {}
for _, bucket in ipairs(req.buckets) do
  out.buckets[#out.buckets + 1] = {bucket.name, redis.call('GET', bucket.key)}
end

local skip = {}
for _, id in ipairs(req.skip) do skip[id] = true end
local latest = redis.call('ZREVRANGE', KEYS[6], 0, req.batches - 1, 'WITHSCORES')
local batches, to_count = {}, {}
for i = 1, #latest, 2 do
  local id = latest[i]
  local batch = {
    id = id, score = latest[i + 1], record = redis.call('HGETALL', req.batch_prefix .. id),
    receipts = redis.call('HLEN', req.receipts_prefix .. id),
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
return cjson.encode(out)
