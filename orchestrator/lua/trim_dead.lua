-- Remove the oldest dead letters once they are archived: the first #ARGV letters of
-- the list, only when they are still exactly those (compared byte for byte), so a
-- letter that `dlq requeue` or `purge` removed meanwhile, or one pushed, is never lost
-- nor removed unarchived. Bounded: the pruner passes at most a chunk.
-- KEYS[1] dead-letter list; ARGV the letters archived, oldest first
-- Returns how many were removed (0: the head changed, the pruner reads it again)
local head = redis.call('LRANGE', KEYS[1], 0, #ARGV - 1)
if #head ~= #ARGV then
  return 0
end
for i = 1, #ARGV do
  if head[i] ~= ARGV[i] then
    return 0
  end
end
redis.call('LTRIM', KEYS[1], #ARGV, -1)
return #ARGV
