-- Move deferred jobs that are due onto the ready list, in due order, and say when the
-- next one falls due (ms, or -1 when none is left). Redis's clock decides "due", so
-- several conductors agree.
-- KEYS[1] deferred zset, KEYS[2] ready list; ARGV[1] most jobs to move
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, job in ipairs(due) do
  redis.call('RPUSH', KEYS[2], job)
  redis.call('ZREM', KEYS[1], job)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if next_due[2] then
  wait = math.max(0, tonumber(next_due[2]) - now)
end
return {#due, wait}
