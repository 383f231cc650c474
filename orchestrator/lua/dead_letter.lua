-- A conductor dead-letters a payload it took and will not forward, in one step: taken
-- out of its processing list and added to the dead letters together, so that a
-- conductor dying in between neither loses the payload nor leaves it to be taken (and
-- dead-lettered) a second time. Only the holder dead-letters: a peer that recovered the
-- list meanwhile holds the live copy, and then nothing is written.
-- KEYS[1] the conductor's processing list, KEYS[2] the dead-letter list
-- ARGV[1] the payload as taken, ARGV[2] its dead-letter record
-- Returns 1 when dead-lettered, 0 when the payload was no longer held.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
