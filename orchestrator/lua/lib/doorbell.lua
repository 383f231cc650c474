-- Ring the conductors' doorbell (`Keys.doorbell`): one element at most, however often
-- it rings before a conductor answers; a conductor's BLPOP takes it and looks for work.
local function ring(doorbell)
  redis.call('LPUSH', doorbell, '1')
  redis.call('LTRIM', doorbell, 0, 0)
end
