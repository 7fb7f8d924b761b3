-- The janitor's step: processing jobs whose lease ended (their worker died), at most ARGV[2], each
-- to be sent again now. KEYS: the leases set, the lapsed set. ARGV: seconds after which a job
-- sent again and still not claimed is sent once more, the most jobs to take.
-- Reads both sorted sets from their low end: the work is O(jobs returned), whatever the number
-- of jobs running. A member whose job is no longer processing (its record ended or expired) is
-- dropped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local again = now + tonumber(ARGV[1]) * 1000
local limit = tonumber(ARGV[2])
local out = {}
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  if #out < limit then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit - #out)) do
      redis.call('ZREM', set, id)
      if redis.call('HGET', '${JOB_KEY_PREFIX}' .. id, 'status') == 'processing' then
        redis.call('ZADD', KEYS[2], again, id)
        table.insert(out, id)
      end
    end
  end
end
return out
