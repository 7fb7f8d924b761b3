-- Claim a job for a worker: from "queued", or from "processing" whose lease ended (its worker
-- died). KEYS: the job hash, the queued counter, the leases set, the lapsed set, the job's output
-- stream. ARGV: worker, started_at, lease milliseconds, job id, TTL seconds, and the output
-- tokens a resumed run keeps from the run before it (0: it starts from nothing).
-- Returns {1, attempts} when claimed, {0, current status} when not.
$WAITING
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
if current == 'processing' then
  local ends = redis.call('ZSCORE', KEYS[3], ARGV[4])
  if ends and tonumber(ends) > now then return {0, current} end
elseif current == 'queued' then
  $LEAVE_QUEUE
else
  return {0, current}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker', ARGV[1], 'started_at', ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
local resumed = tonumber(ARGV[6] or '0')
if resumed > 0 then
  redis.call('HSET', KEYS[1], 'resumed_at_token', resumed)
  redis.call('XADD', KEYS[5], '*', 'e', 'start', 'a', attempts, 'r', resumed)
else
  redis.call('HDEL', KEYS[1], 'resumed_at_token')
  redis.call('XADD', KEYS[5], '*', 'e', 'start', 'a', attempts)
end
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {1, attempts}
