-- KEYS: the batch hash, the queued counter of all models, then per job three: its hash, its
-- queue's Redis list, its model's queued counter (genq.store.jobs). ARGV: TTL seconds, the most
-- jobs of one model that may wait, n, the owner's set of active jobs ('' for none: create_job.lua
-- keeps it), the most active jobs it may have, then the batch's field/value count and pairs,
-- then per job: its queue message, its field/value count and pairs. Returns {'full', jobs
-- waiting, the counter} or {'busy', the owner's active jobs} with nothing written when the n jobs
-- do not fit under a limit, else {'created', ''}.
$WAITING
local now = now_s()
local n = tonumber(ARGV[3])
local adding = {}
for j = 1, n do
  local counter = KEYS[3 * j + 2]
  adding[counter] = (adding[counter] or 0) + 1
end
for counter, k in pairs(adding) do
  local waiting = recount(counter, now)
  if waiting + k > tonumber(ARGV[2]) then return {'full', tostring(waiting), counter} end
end
local owner = ARGV[4]
if owner ~= '' and redis.call('SCARD', owner) + n > tonumber(ARGV[5]) then
  for _, job in ipairs(redis.call('SMEMBERS', owner)) do
    local status = redis.call('HGET', job, 'status')
    if status ~= 'queued' and status ~= 'processing' then redis.call('SREM', owner, job) end
  end
  local active = redis.call('SCARD', owner)
  if active + n > tonumber(ARGV[5]) then return {'busy', tostring(active), ''} end
end
local count = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, 6 + count))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local i = 7 + count
for j = 1, n do
  local job = KEYS[3 * j]
  count = tonumber(ARGV[i + 1])
  redis.call('HSET', job, unpack(ARGV, i + 2, i + 1 + count))
  redis.call('EXPIRE', job, ARGV[1])
  redis.call('LPUSH', KEYS[3 * j + 1], ARGV[i])
  local id = string.sub(job, #'${JOB_KEY_PREFIX}' + 1)
  wait(KEYS[3 * j + 2], id, now + tonumber(ARGV[1]))
  if KEYS[3 * j + 2] ~= KEYS[2] then wait(KEYS[2], id, now + tonumber(ARGV[1])) end
  if owner ~= '' then redis.call('SADD', owner, job) end
  i = i + 2 + count
end
if owner ~= '' then redis.call('EXPIRE', owner, ARGV[1]) end
for counter, _ in pairs(adding) do recount(counter, now) end
recount(KEYS[2], now)
return {'created', '', ''}
