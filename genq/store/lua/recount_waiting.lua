-- The janitor's recount of the waiting counters (waiting.lua): KEYS are counters (all models',
-- a model's). Jobs whose record expired while they waited leave the count; returns the counts.
$WAITING
local now = now_s()
local out = {}
for i = 1, #KEYS do out[i] = recount(KEYS[i], now) end
return out
