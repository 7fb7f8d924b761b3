-- KEYS: the job hash, the queued counter, the leases set, the lapsed set, the webhook schedule,
-- the job's output stream. ARGV: allowed current statuses (space separated), new
-- status, channel to publish the job id on ('' for none), job id, TTL seconds ('' to keep), the
-- worker that must own the job ('' for any), the ``completed`` delivery to schedule if the job's
-- webhook wants it ('' for none), the time to schedule it at, the job's last ``output`` stream
-- entry as index ('' for none), text and output tokens (worker.host.streams: written in this step,
-- just before the stream's end), how long the output stream is kept once the job ended (seconds:
-- its final text is in the hash; a reader who comes later gets the finished job), then
-- field/value pairs. The message published is the job id, a
-- space, and the hash after the change as a JSON array of fields and values. Returns
-- {1, previous status} when applied, {0, current status} when refused ('' if no such job). A job
-- of a batch (field batch_id) that ends counts its batch down; the batch's last job completes it,
-- in this same step, so exactly once (genq.store.batches).
$WAITING
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '%S+') do
  if s == current then allowed = true end
end
if not allowed then return {0, current} end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[6] then return {0, current} end
if current == 'queued' then
  $LEAVE_QUEUE
end
if current == 'processing' and ARGV[2] ~= 'processing' then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 13))
if ARGV[9] ~= '' then
  -- the job's last ``output`` entry, as append_outputs.lua writes them
  redis.call('XADD', KEYS[6], '*', 'e', 'out', 'i', ARGV[9], 't', ARGV[10], 'n', ARGV[11])
end
if ARGV[5] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('XADD', KEYS[6], '*', 'e', 'end', 's', ARGV[2])
  redis.call('EXPIRE', KEYS[6], ARGV[12])
end
if ARGV[7] ~= '' then
  local events = redis.call('HGET', KEYS[1], 'webhook_events_filter')
  if events and string.find(events, '"completed"', 1, true) then
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
  end
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. cjson.encode(redis.call('HGETALL', KEYS[1])))
end
-- batch: the last job of a batch to end sets its completed_at and schedules its webhook
local batch = ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'batch_id')
local bkey = batch and '${BATCH_KEY_PREFIX}' .. batch
if bkey and redis.call('EXISTS', bkey) == 1 and redis.call('HINCRBY', bkey, 'pending', -1) == 0 then
  redis.call('HSET', bkey, 'completed_at', ARGV[8])
  redis.call('EXPIRE', bkey, ARGV[5])
  local delivery = redis.call('HGET', bkey, 'delivery')
  if delivery then redis.call('ZADD', KEYS[5], ARGV[8], delivery) end
end
return {1, current}
