-- Processing jobs whose lease lapsed and that no janitor resent lately. KEYS: the processing set.
-- ARGV: seconds before the same job may be resent again.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', '${LEASE_KEY_PREFIX}' .. id) == 0 then
    if redis.call('HGET', '${JOB_KEY_PREFIX}' .. id, 'status') ~= 'processing' then
      redis.call('SREM', KEYS[1], id)
    elseif redis.call('SET', '${REQUEUED_KEY_PREFIX}' .. id, '1', 'NX', 'EX', ARGV[1]) then
      table.insert(out, id)
    end
  end
end
return out
