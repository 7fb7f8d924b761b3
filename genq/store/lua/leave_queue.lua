-- A fragment that scripts.py puts into claim.lua and transition.lua: a queued job (ARGV[4]) that
-- leaves the queue (started, or ended unrun) leaves the waiting counts: all models' (KEYS[2]) and
-- its own model's, named by its hash (KEYS[1]).
leave(KEYS[2], ARGV[4])
local model = redis.call('HGET', KEYS[1], 'model')
if model then leave('${MODEL_QUEUED_PREFIX}' .. model, ARGV[4]) end
