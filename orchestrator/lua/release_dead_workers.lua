-- Free the jobs of workers that died mid-run, for other workers to run at once.
--
-- arq marks a running job with an in-progress key that outlives its worker by the job
-- timeout; a worker that is gone (its heartbeat lapsed) cannot finish it, so the key is
-- deleted here and the job, still in its pool's queue, is taken by the next poll. Its
-- arq try counter keeps counting, so a job that kills every worker that runs it ends
-- up dead-lettered as interrupted after max_tries runs.
-- KEYS[1] holders hash (worker id -> pool); ARGV[1] key root, ARGV[2] arq in-progress
-- key prefix
-- Returns the freed arq job ids, then the pools to wake, as {ids, pools}.
local root, prefix = ARGV[1], ARGV[2]
local freed, pools, seen = {}, {}, {}
local holders = redis.call('HGETALL', KEYS[1])
for i = 1, #holders, 2 do
  local worker, pool = holders[i], holders[i + 1]
  if redis.call('EXISTS', root .. ':worker:' .. pool .. ':' .. worker) == 0 then
    local holding = root .. ':holding:' .. worker
    for _, arq_id in ipairs(redis.call('HKEYS', holding)) do
      redis.call('DEL', prefix .. arq_id)
      freed[#freed + 1] = arq_id
      if not seen[pool] then
        seen[pool] = true
        pools[#pools + 1] = pool
      end
    end
    redis.call('DEL', holding)
    redis.call('HDEL', KEYS[1], worker)
  end
end
for _, pool in ipairs(pools) do
  redis.call('PUBLISH', root .. ':wake:' .. pool, 'freed')
end
return {freed, pools}
