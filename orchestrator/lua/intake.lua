-- Take up to ARGV[1] jobs into a conductor's processing list, trying the sources in
-- the order given (ready jobs, then pools' waiting lists, then backlogs by priority).
-- KEYS[1] processing list; ARGV[1] how many, ARGV[2 ..] source lists
local want = tonumber(ARGV[1])
local taken = {}
for i = 2, #ARGV do
  while #taken < want do
    local job = redis.call('LMOVE', ARGV[i], KEYS[1], 'LEFT', 'RIGHT')
    if not job then
      break
    end
    taken[#taken + 1] = job
  end
  if #taken >= want then
    break
  end
end
return taken
