-- Mark a dispatched batch held until the batches it names have settled (`dispatch
-- --after`), once all its jobs are in its held lists; the conductors look at the held
-- batches set. A batch released before (dispatched again after its release) stays so.
-- KEYS[1] batch hash, KEYS[2] held batches set
-- ARGV[1] the batch, ARGV[2] awaited batches (comma-separated), ARGV[3] after policy
-- Returns 1 when held now, 0 when it was released already.
if redis.call('HEXISTS', KEYS[1], 'released_at') == 1 then
  return 0
end
if not redis.call('HGET', KEYS[1], 'held') then
  redis.call('HSET', KEYS[1], 'held', 'waiting')
end
redis.call('HSETNX', KEYS[1], 'after', ARGV[2])
redis.call('HSETNX', KEYS[1], 'after_policy', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
