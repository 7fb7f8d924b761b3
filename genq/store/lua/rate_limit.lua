-- GCRA, the token bucket kept as one number: KEYS[1] holds when (ms, Redis's clock, shared by
-- every API replica) the key's next request is due if it keeps to its rate; a burst may run that
-- far ahead of now. ARGV: ms per request (1000 / rate), the burst. Returns '0' when the request
-- may go (and books it), else the ms to wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due < now then due = now end
local wait = due + interval - now - interval * tonumber(ARGV[2])
if wait > 0 then return string.format('%.3f', wait) end
local ttl = math.max(1, math.ceil(due + interval - now))  -- a tiny interval rounds away in a double
redis.call('SET', KEYS[1], string.format('%.3f', due + interval), 'PX', ttl)
return '0'
