-- A fragment that scripts.py puts at the top of the scripts that change what waits (where they
-- say WAITING): the jobs waiting to start, of all models and of each model, are sorted sets of
-- job ids scored by when each job's record expires; each has a counter beside it, the set's
-- size, which is what the API reads and checks its limits against. A record that expired while
-- its job waited (no worker for a day; its message lost) leaves its set the next time the set is
-- counted, so that no counter can drift: the work is one step per expired job.
local function waiting_set(counter)
  if counter == '${QUEUED_COUNT}' then return '${WAITING_SET}' end
  return '${MODEL_WAITING_PREFIX}' .. string.sub(counter, #'${MODEL_QUEUED_PREFIX}' + 1)
end
-- The count is written before the expired are removed: a script's first write is where Redis,
-- full (maxmemory, noeviction), refuses it, and a SET is refused there (a removal is not), so a
-- submit is refused whole rather than half done.
local function recount(counter, now)
  local set = waiting_set(counter)
  local n = redis.call('ZCOUNT', set, '(' .. now, '+inf')
  redis.call('SET', counter, n)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  return n
end
local function wait(counter, job_id, expires_s)
  redis.call('ZADD', waiting_set(counter), expires_s, job_id)
end
local function leave(counter, job_id)
  local set = waiting_set(counter)
  redis.call('ZREM', set, job_id)
  redis.call('SET', counter, redis.call('ZCARD', set))
end
local function now_s()
  return tonumber(redis.call('TIME')[1])
end
