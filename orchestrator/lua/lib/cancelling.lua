-- Shared by the scripts that may find a cancelled job (cancel_sweep, cancel_queued,
-- forward, begin): what makes a job cancelled, and what cancelling one writes.
-- Key names are derived from the root as orchestrator/keys.py builds them
-- (`<root>:batch:<batch>`, `<root>:cancelled:<batch>`, `<root>:receipts:<batch>`).

-- Whether the job `batch`/`job_id` must not start: its whole batch was cancelled
-- (`cancelled_at` in the batch hash) or the job itself (listed in `cancelled:<batch>`).
-- Keyed by batch and id, so a later job that reuses an id in another batch is not hit.
local function is_cancelled(root, batch, job_id)
  return redis.call('HEXISTS', root .. ':batch:' .. batch, 'cancelled_at') == 1
    or redis.call('HEXISTS', root .. ':cancelled:' .. batch, job_id) == 1
end

-- Receipt statuses after which a job does not run again: never overwritten by `cancelled`.
local FINAL = {succeeded = true, failed = true, dead = true}

-- Record a job that will not start as cancelled: a `cancelled` receipt (unless it
-- already ended) with no run in it, and its envelope kept for `retry --cancelled`.
-- Returns true when the receipt was written.
local function cancel_job(root, batch, job_id, task, envelope, now, error)
  local receipts = root .. ':receipts:' .. batch
  local current = redis.call('HGET', receipts, job_id)
  if current then
    local ok, receipt = pcall(cjson.decode, current)
    if ok and type(receipt) == 'table' and FINAL[receipt.status] then
      return false
    end
  end
  redis.call('HSET', receipts, job_id, cjson.encode({
    job_id = job_id, batch = batch, task = task, status = 'cancelled',
    pool = '', worker = '', attempt = 0, started_at = cjson.null, ended_at = now,
    duration = 0, error = error,
  }))
  redis.call('HSET', root .. ':cancelled:' .. batch, job_id, envelope)
  return true
end
