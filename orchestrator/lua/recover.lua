-- Put a conductor's unforwarded jobs back at the head of the ready list, in order, and
-- forget that conductor. Used on a dead peer, and on oneself when stopping.
-- KEYS[1] its processing list, KEYS[2] ready list, KEYS[3] conductors set,
-- KEYS[4] its heartbeat; ARGV[1] its id
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do
  moved = moved + 1
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return moved
