-- A held batch (`dispatch --after`): release it onto its backlog once every batch it
-- waits for has settled, or keep it held, saying what it waits for. One script, so that
-- of several conductors looking at once exactly one releases it, and its jobs move onto
-- the backlog's lists (each priority level's own) and ring the doorbell in one step.
--
-- An awaited batch has settled when each of its jobs has a final receipt (succeeded,
-- failed, dead, cancelled) or is cancelled, and none is running; or when the batch was
-- cancelled as a whole and none is running. It settled well when every job succeeded.
-- When one settled otherwise the held batch's `after_policy` decides: `run` releases it
-- anyway, `hold` keeps it held (state `blocked`) until `orchestrator release` or a
-- cancel, `cancel` cancels it (its jobs are released behind the batch's cancel mark,
-- which the conductor's forward honours: each gets its `cancelled` receipt there).
-- A held batch that was cancelled itself is released likewise, for the same reason.
--
-- KEYS[1] held batches set, KEYS[2] doorbell
-- ARGV[1] root (hash-tagged prefix), ARGV[2] the held batch, ARGV[3] "check" (the
--   conductors), "force" (`orchestrator release`) or "cancel" (`orchestrator cancel`,
--   once the batch is marked cancelled), ARGV[4] now (unix seconds)
-- Returns {state, detail}: state `released`, `waiting`, `blocked`, `cancelled`, or
-- `not_held`; detail says what it waits for (`batch X: 12 of 40 pending`), or why.
--#include doorbell
--#include settled
local root, batch, mode, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local CANCEL_GRACE = 5  -- seconds
local hash = root .. ':batch:' .. batch
local state, after, policy, backlog, cancelled_at = unpack(redis.call(
  'HMGET', hash, 'held', 'after', 'after_policy', 'backlog', 'cancelled_at'))
if not state then
  redis.call('SREM', KEYS[1], batch)
  return {'not_held', ''}
end

local function release(note)
  local lists = {{0, root .. ':held:' .. batch}}
  local levels_key = root .. ':held_levels:' .. batch
  for _, level in ipairs(redis.call('ZRANGE', levels_key, 0, -1)) do
    lists[#lists + 1] = {tonumber(level), root .. ':held:' .. batch .. '#' .. level}
  end
  local moved = 0
  for _, entry in ipairs(lists) do
    local level, list = entry[1], entry[2]
    local target = root .. ':' .. backlog
    if level ~= 0 then
      target = target .. '#' .. level
      redis.call('ZADD', root .. ':levels:' .. backlog, level, level)
    end
    local n = redis.call('LLEN', list)
    while redis.call('LMOVE', list, target, 'LEFT', 'RIGHT') do end
    moved = moved + n
  end
  redis.call('DEL', levels_key)
  redis.call('HDEL', hash, 'held', 'waiting_for')
  redis.call('HSET', hash, 'released_at', now, 'released', note)
  redis.call('SREM', KEYS[1], batch)
  if moved > 0 then
    ring(KEYS[2])
  end
  return moved
end

if mode == 'force' then
  release('by orchestrator release')
  return {'released', 'by orchestrator release'}
end
if cancelled_at then
  -- `cancel` releases it itself ("cancel"), so that its sweep finds and counts the jobs;
  -- a conductor does only if that cancel did not get so far within CANCEL_GRACE.
  if mode == 'cancel' or tonumber(now) - tonumber(cancelled_at) > CANCEL_GRACE then
    release('cancelled')
    return {'cancelled', 'the batch was cancelled'}
  end
  return {'waiting', 'being cancelled'}
end
if state == 'blocked' then
  return {'blocked', redis.call('HGET', hash, 'waiting_for') or ''}
end

local waiting, failed = {}, {}
for awaited in string.gmatch(after or '', '[^,]+') do
  local pending, bad, total = tally(root, awaited)
  if pending > 0 then
    waiting[#waiting + 1] = 'batch ' .. awaited .. ': ' .. pending .. ' of ' .. total .. ' pending'
  elseif bad > 0 then
    failed[#failed + 1] = 'batch ' .. awaited .. ' settled with ' .. bad .. ' not succeeded'
  end
end
if #waiting > 0 then
  local detail = 'waiting for ' .. table.concat(waiting, '; ')
  redis.call('HSET', hash, 'waiting_for', detail)
  return {'waiting', detail}
end
if #failed > 0 and policy ~= 'run' then
  local detail = table.concat(failed, '; ')
  if policy == 'cancel' then
    redis.call('HSET', hash, 'cancelled_at', now)
    release('cancelled: ' .. detail)
    return {'cancelled', detail}
  end
  detail = detail .. ': held until orchestrator release or cancel'
  redis.call('HSET', hash, 'held', 'blocked', 'waiting_for', detail)
  return {'blocked', detail}
end
local note = 'after ' .. (after or ''):gsub(',', ', ') .. ' settled'
release(note)
return {'released', note}
