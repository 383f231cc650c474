-- Record a batch before any of its jobs is queued, or find the one already recorded.
-- Atomic so that two dispatches of one manifest cannot both see "new".
-- KEYS[1] batch hash, KEYS[2] batches zset, KEYS[3] backlogs set
-- ARGV[1] sha256, ARGV[2] manifest path, ARGV[3] backlog, ARGV[4] total jobs,
-- ARGV[5] now (unix seconds), ARGV[6] batch id
local digest = redis.call('HGET', KEYS[1], 'sha256')
if not digest then
  redis.call('HSET', KEYS[1], 'sha256', ARGV[1], 'manifest', ARGV[2], 'backlog', ARGV[3],
    'total', ARGV[4], 'queued', 0, 'created_at', ARGV[5])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[5], ARGV[6])
  redis.call('SADD', KEYS[3], ARGV[3])
  return {'new', ARGV[3], ARGV[2]}
end
local backlog, manifest = unpack(redis.call('HMGET', KEYS[1], 'backlog', 'manifest'))
if digest ~= ARGV[1] then
  return {'other_manifest', backlog, manifest}
end
if backlog ~= ARGV[3] then
  return {'other_backlog', backlog, manifest}
end
return {'existing', backlog, manifest}
