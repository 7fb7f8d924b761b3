-- KEYS: the schedule, the queue's list. ARGV: n, then n members, then their n messages. A member
-- still in the schedule is removed and its message pushed; returns how many were.
local n = tonumber(ARGV[1])
local moved = 0
for i = 1, n do
  if redis.call('ZREM', KEYS[1], ARGV[1 + i]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1 + n + i])
    moved = moved + 1
  end
end
return moved
