-- Claim a job for a worker: from "queued", or from "processing" whose lease lapsed (its worker
-- died). KEYS: the job hash, the queued counter, the processing set, the job's lease, the job's
-- output stream. ARGV: worker, started_at, lease milliseconds, job id, TTL seconds.
-- Returns {1, attempts} when claimed, {0, current status} when not.
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
if current == 'processing' then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {0, current} end
elseif current == 'queued' then
  $LEAVE_QUEUE
else
  return {0, current}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker', ARGV[1], 'started_at', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3])
redis.call('XADD', KEYS[5], '*', 'e', 'start', 'a', attempts)
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {1, attempts}
