-- A session joins a room. KEYS: online, latency, users, metrics, session hash.
-- ARGV: sessionId, nowMs, userId, hour, ttlSeconds, capacity, code, tenant, limit, then field/value
-- pairs. Returns the room's online count, or -1 (nothing written) when the room already holds
-- `limit` sessions of any node: capacity is enforced here, cluster-wide, not per process.
-- limit 0 admits unconditionally (a node that admitted on its local count while Redis was down).
-- A session already in the room (a replayed join) is always admitted: it takes no new place.
local sid, now, user, hour, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local limit = tonumber(ARGV[9]) or 0
if limit > 0 and not redis.call('ZSCORE', KEYS[1], sid) and redis.call('ZCARD', KEYS[1]) >= limit then
  return -1
end
redis.call('HSET', KEYS[4], 'capacity', ARGV[6], 'code', ARGV[7], 'tenant', ARGV[8])
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[5], unpack(fields)) end
redis.call('EXPIRE', KEYS[5], ttl)
local added = redis.call('ZADD', KEYS[1], now, sid)
if added == 1 then redis.call('HINCRBY', KEYS[3], user, 1) end
local online = redis.call('ZCARD', KEYS[1])
local peak_hour = redis.call('HGET', KEYS[4], 'peak_hour')
local peak = tonumber(redis.call('HGET', KEYS[4], 'peak') or '0')
if peak_hour ~= hour or online > peak then
  redis.call('HSET', KEYS[4], 'peak', online, 'peak_hour', hour)
end
return online
