-- A fragment that scripts.py puts into claim.lua and transition.lua: a queued job that leaves the
-- queue (started, or ended unrun) leaves the waiting counts: all models' (KEYS[2]) and its own
-- model's, named by its hash (KEYS[1]).
redis.call('DECR', KEYS[2])
local model = redis.call('HGET', KEYS[1], 'model')
if model then redis.call('DECR', '${MODEL_QUEUED_PREFIX}' .. model) end
