-- Put a conductor's unforwarded jobs back at the head of the ready list, in order.
-- Used on a dead peer (which is then forgotten), and on oneself when stopping: then the
-- id stays registered, so that a peer sweeps the list once more later, in case a
-- blocked BLMOVE of ours still delivered a job into it after this ran.
-- Jobs moved ring the doorbell, so that a conductor (a live peer, when this one stops)
-- takes them at once.
-- KEYS[1] its processing list, KEYS[2] ready list, KEYS[3] conductors set,
-- KEYS[4] its heartbeat, KEYS[5] the conductors' doorbell; ARGV[1] its id, ARGV[2]
-- "forget" or "keep"
--#include doorbell
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do
  moved = moved + 1
end
if moved > 0 then
  ring(KEYS[5])
end
if ARGV[2] == 'forget' then
  redis.call('SREM', KEYS[3], ARGV[1])
end
redis.call('DEL', KEYS[4])
return moved
