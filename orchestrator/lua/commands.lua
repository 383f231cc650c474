-- A MULTI's commands run as one script: one call and one reply where a MULTI has a
-- reply for each command (redis-py parses each apart: most of a worker's CPU a job went
-- there). Run as EXEC runs them, in order, each whether or not one before failed; except
-- that a command refused before any succeeded ends the script at once with its error, so
-- that a Redis out of memory refuses it whole, as it refuses a MULTI (Redis checks
-- maxmemory at a script's first write only: the first write refused, nothing was).
-- KEYS[1] a key of the commands (names the slot on Redis Cluster; every key the commands
--   name is in that slot, as a MULTI's must be)
-- ARGV: per command, its number of words, then its words (the name first)
-- Returns each command's reply, as EXEC does (an error among them as an error).
local replies, wrote = {}, false
local i = 1
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local reply = redis.pcall(unpack(ARGV, i + 1, i + count))
  if type(reply) == 'table' and reply.err then
    if not wrote then return reply end
  else
    wrote = true
  end
  replies[#replies + 1] = reply
  i = i + count + 1
end
return replies
