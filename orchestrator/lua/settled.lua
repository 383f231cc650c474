-- How far a batch is from settled (see lib/settled.lua), read in one atomic step.
-- ARGV[1] root (hash-tagged prefix), ARGV[2] the batch
-- Returns {pending, not succeeded, total}
--#include settled
local pending, bad, total = tally(ARGV[1], ARGV[2])
return {pending, bad, total}
