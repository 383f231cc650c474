-- Shared by intake.lua and forward.lua (spliced in by orchestrator/scripts.py): what a
-- pool's live workers announce in their heartbeats.

-- The pool's live workers: total slots, how many, and the task list each announces
-- (a comma-joined string; false for a worker too old to announce, which runs anything).
-- A worker whose heartbeat lapsed is dropped from the set when `forget` is true.
local function live_workers(root, name, forget)
  local set = root .. ':workers:' .. name
  local slots, tasks = 0, {}
  for _, worker in ipairs(redis.call('SMEMBERS', set)) do
    local fields = redis.call('HMGET', root .. ':worker:' .. name .. ':' .. worker, 'slots', 'tasks')
    if fields[1] then
      slots = slots + tonumber(fields[1])
      tasks[#tasks + 1] = fields[2] and (',' .. fields[2] .. ',') or false
    elseif forget then
      redis.call('SREM', set, worker)
    end
  end
  return slots, tasks
end

-- Whether a pool runs `task`: it has live workers and every one of them announces it, so
-- a job forwarded into the pool's shared queue can never reach a worker without its code.
-- `cache` remembers answers per task for the rest of the script.
local function pool_runs(tasks, cache, task)
  local known = cache[task]
  if known ~= nil then return known end
  local runs = #tasks > 0
  local needle = ',' .. task .. ','
  for _, announced in ipairs(tasks) do
    if announced and not string.find(announced, needle, 1, true) then
      runs = false
      break
    end
  end
  cache[task] = runs
  return runs
end
