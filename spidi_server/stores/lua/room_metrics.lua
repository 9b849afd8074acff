-- One room's metrics. KEYS: online, latency, users, metrics. ARGV: current hour.
-- Returns {online, users, peak, capacity, latencySum, latencyCount, code, tenant}.
local online = redis.call('ZCARD', KEYS[1])
local users = redis.call('HLEN', KEYS[3])
local m = redis.call('HMGET', KEYS[4], 'peak', 'peak_hour', 'capacity', 'code', 'tenant')
local peak = tonumber(m[1] or '0')
if m[2] ~= ARGV[1] then peak = online end
if online > peak then peak = online end
local sum, n = 0, 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  sum = sum + tonumber(v)
  n = n + 1
end
return {online, users, peak, tonumber(m[3] or '0'), tostring(sum), n, m[4] or '', m[5] or ''}
