-- Queue the jobs of one chunk that this batch has not queued before, in manifest order.
-- SMISMEMBER (Redis 6.2) answers for the whole chunk in one call, so a chunk costs three
-- commands however many jobs it holds.
-- KEYS[1] batch job-id set, KEYS[2] backlog list, KEYS[3] batch hash
-- ARGV[1] n, ARGV[2 .. n+1] job ids, ARGV[n+2 .. 2n+1] envelopes
local n = tonumber(ARGV[1])
local ids = {}
for i = 1, n do ids[i] = ARGV[i + 1] end
local seen = redis.call('SMISMEMBER', KEYS[1], unpack(ids))
local fresh_ids, fresh = {}, {}
for i = 1, n do
  if seen[i] == 0 then
    fresh_ids[#fresh_ids + 1] = ids[i]
    fresh[#fresh + 1] = ARGV[n + 1 + i]
  end
end
if #fresh > 0 then
  redis.call('SADD', KEYS[1], unpack(fresh_ids))
  redis.call('RPUSH', KEYS[2], unpack(fresh))
  redis.call('HINCRBY', KEYS[3], 'queued', #fresh)
end
return #fresh
