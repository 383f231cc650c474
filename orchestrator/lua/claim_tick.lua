-- Claim a schedule's tick: the first conductor to ask fires it, every other is told no.
-- Compare-and-set on the last tick claimed, so however many conductors see the same
-- tick due, and whenever they look, one claims it, once; an earlier tick is never
-- claimed after a later one.
-- The claimed tick joins the schedule's turns, in the same step (schedules/firing.py).
-- KEYS[1] the schedule's hash, KEYS[2] its turns (sorted set)
-- ARGV[1] the tick (unix seconds), ARGV[2] the conductor's id, ARGV[3] now
-- Returns 1 when this caller claimed the tick, else 0.
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick') or '-1')
if tonumber(ARGV[1]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'last_tick', ARGV[1], 'claimed_by', ARGV[2], 'claimed_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
return 1
