-- The scaler's lease: take it when free, renew it when held, give it back with TTL 0.
-- One script, so that two conductors can never both believe they hold it.
-- KEYS[1] the lease; ARGV[1] the conductor's id, ARGV[2] TTL in ms (0: give it back)
-- Returns 1 when the caller holds the lease now, else 0.
local holder = redis.call('GET', KEYS[1])
if tonumber(ARGV[2]) == 0 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
