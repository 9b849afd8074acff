-- One room's metrics. KEYS: online, latency, users, metrics. ARGV: current hour, and optionally
-- the last-heartbeat scores (epoch ms) before which a session is late, and at risk.
-- Returns {online, users, peak, capacity, latencySum, latencyCount, code, tenant, late, atRisk}.
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
local late, at_risk = 0, 0
if ARGV[3] then
  at_risk = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[3])
  late = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[2]) - at_risk
end
return {online, users, peak, tonumber(m[3] or '0'), tostring(sum), n, m[4] or '', m[5] or '', late, at_risk}
