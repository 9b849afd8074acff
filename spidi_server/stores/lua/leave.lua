-- A session leaves a room. KEYS: online, latency, users, metrics, session hash. ARGV: sessionId, userId.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[5])
if removed == 1 then
  local left = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
  if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
end
return removed
