-- Give back the slots of jobs a pool counts as in flight that arq no longer holds.
--
-- A worker removes a job from `inflight` when it records the job's end. If arq ended a
-- job without our runner seeing it (a timeout that beat ours, a function missing from
-- a worker's registry during a rolling deploy), the entry would hold a slot forever:
-- such a job, forwarded over ARGV[3] ms ago and with no arq job key left, is
-- dead-lettered as lost.
-- KEYS[1] inflight zset, KEYS[2] dead-letter list, KEYS[3] events channel
-- ARGV[1] arq job key prefix, ARGV[2] key root, ARGV[3] age (ms), ARGV[4] now (ms),
-- ARGV[5] pool name
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[3]),
  'LIMIT', 0, 200)
local reaped = {}
for _, job_id in ipairs(old) do
  if redis.call('EXISTS', ARGV[1] .. ARGV[2] .. ':' .. job_id) == 0 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('RPUSH', KEYS[2], cjson.encode({
      job_id = job_id, reason = 'lost', at = tonumber(ARGV[4]) / 1000, payload = cjson.null,
      error = 'forwarded to ' .. ARGV[5] .. ' but ended in arq without a receipt',
    }))
    reaped[#reaped + 1] = job_id
  end
end
if #reaped > 0 then
  redis.call('PUBLISH', KEYS[3], ARGV[5])
end
return reaped
