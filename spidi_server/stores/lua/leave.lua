-- A session leaves a room. KEYS: online, latency, users, metrics, session hash.
-- ARGV: sessionId, userId, and optionally the seconds the room's live state is kept once empty:
-- when the last session left, the room's keys expire then (join.lua keeps them again).
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[5])
if removed == 1 then
  local left = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
  if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
end
local ttl = tonumber(ARGV[3] or '0') or 0
if ttl > 0 and redis.call('ZCARD', KEYS[1]) == 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
return removed
