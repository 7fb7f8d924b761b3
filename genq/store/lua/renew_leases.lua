-- A worker's heartbeat: its running jobs' leases end ARGV[1] ms from now. KEYS: the leases set.
-- ARGV: lease milliseconds, then the job ids. A job no longer in the set (it ended, or a janitor
-- took it as lapsed) is not added back. Returns how many were renewed.
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ends, ARGV[i])
end
return renewed
