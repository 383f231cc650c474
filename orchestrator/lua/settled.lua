-- How far a batch is from settled (see lib/settled.lua), read in one atomic step.
-- KEYS[1] the batch's hash (names the slot on Redis Cluster; the keys read are derived
--   from ARGV[1], in the same slot)
-- ARGV[1] root (hash-tagged prefix), ARGV[2] the batch
-- Returns {pending, not succeeded, total}
--#include settled
local pending, bad, total = tally(ARGV[1], ARGV[2])
return {pending, bad, total}
