-- Whether a batch has settled (`dispatch --after`, a schedule's overlap): how many of
-- its jobs have not, how many settled other than succeeded, and its total. Settled:
-- each job has a final receipt (succeeded, failed, dead, cancelled) or is cancelled,
-- and none runs; or the batch was cancelled as a whole and none runs. A batch whose
-- dispatch has not completed has all its jobs pending. `root`: the keys' prefix.
local function tally(root, awaited)
  local key = root .. ':batch:' .. awaited
  local total, complete, whole = unpack(redis.call('HMGET', key, 'total', 'complete', 'cancelled_at'))
  total = tonumber(total or '0')
  if not complete then
    return total, 0, total
  end
  local running = redis.call('HLEN', root .. ':running:' .. awaited)
  local receipts_key, cancelled_key = root .. ':receipts:' .. awaited, root .. ':cancelled:' .. awaited
  if whole and running == 0 then
    return 0, 1, total
  end
  local known = redis.call('HLEN', receipts_key) + redis.call('HLEN', cancelled_key)
  if running > 0 or known < total then
    return math.max(total - known, running, 1), 0, total
  end
  local final, bad = 0, 0
  local ids = redis.call('HKEYS', receipts_key)
  local values = redis.call('HVALS', receipts_key)
  for i, receipt in ipairs(values) do
    local status = string.match(receipt, '"status":"(%a+)"')
    if status == 'succeeded' then
      final = final + 1
    elseif status == 'failed' or status == 'dead' or status == 'cancelled' then
      final, bad = final + 1, bad + 1
    end
  end
  for _, id in ipairs(redis.call('HKEYS', cancelled_key)) do
    if redis.call('HEXISTS', receipts_key, id) == 0 then
      final, bad = final + 1, bad + 1
    end
  end
  return math.max(total - final, 0), bad, total
end
