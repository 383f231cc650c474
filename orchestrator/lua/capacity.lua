-- Free slots of each pool: live heartbeat slots minus jobs forwarded and not finished,
-- within the pool's max_in_flight cap. Workers whose heartbeat lapsed are forgotten.
-- ARGV[1] key root, then per pool: name, max_in_flight (0: none)
-- Returns per pool: free, live slots, in flight, live workers
local root = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local name, cap = ARGV[i], tonumber(ARGV[i + 1])
  local set = root .. ':workers:' .. name
  local slots, live = 0, 0
  for _, worker in ipairs(redis.call('SMEMBERS', set)) do
    local s = redis.call('HGET', root .. ':worker:' .. name .. ':' .. worker, 'slots')
    if s then
      slots = slots + tonumber(s)
      live = live + 1
    else
      redis.call('SREM', set, worker)
    end
  end
  local inflight = redis.call('ZCARD', root .. ':inflight:' .. name)
  local free = slots - inflight
  if cap > 0 and cap - inflight < free then
    free = cap - inflight
  end
  out[#out + 1] = free
  out[#out + 1] = slots
  out[#out + 1] = inflight
  out[#out + 1] = live
end
return out
