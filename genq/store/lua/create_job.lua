-- KEYS[1] the job hash, KEYS[2] the idempotency key ('' for none), KEYS[3] the job's model's
-- queued counter (checked against the limit, after a recount: waiting.lua), KEYS[4] the queue's Redis list ('' to enqueue
-- nothing), KEYS[5] the owner's set of active job keys ('' for no owner), KEYS[6] the queued
-- counter of all models. ARGV: TTL seconds, idempotency value, the most jobs that may wait, the
-- job's queue message, the most active jobs the owner may have, then the record's field/value
-- pairs. Nothing is written when it returns {'exists', the key's value} (the key is taken),
-- {'full', jobs waiting} or {'busy', the owner's active jobs}; else {'created', ''}, with the
-- record and its message both written.
-- The owner's set is pruned (members whose job ended or expired) only when it looks full, so a
-- create costs O(1) amortized; a key really at its limit pays O(limit) per refused try, which its
-- request rate bounds. Members are job keys, read by name as lapsed.lua reads its keys.
$WAITING
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {'exists', existing} end
end
local now = now_s()
local waiting = recount(KEYS[3], now)
if waiting >= tonumber(ARGV[3]) then return {'full', tostring(waiting)} end
if KEYS[5] ~= '' and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  for _, job in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local status = redis.call('HGET', job, 'status')
    if status ~= 'queued' and status ~= 'processing' then redis.call('SREM', KEYS[5], job) end
  end
  local active = redis.call('SCARD', KEYS[5])
  if active >= tonumber(ARGV[5]) then return {'busy', tostring(active)} end
end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local id = string.sub(KEYS[1], #'${JOB_KEY_PREFIX}' + 1)
local expires = now + tonumber(ARGV[1])
wait(KEYS[3], id, expires)
redis.call('SET', KEYS[3], waiting + 1)
if KEYS[6] ~= KEYS[3] then
  wait(KEYS[6], id, expires)
  recount(KEYS[6], now)
end
if KEYS[4] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[4]) end
if KEYS[5] ~= '' then
  redis.call('SADD', KEYS[5], KEYS[1])
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
return {'created', ''}
