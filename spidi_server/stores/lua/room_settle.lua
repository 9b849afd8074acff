-- An empty room's keys: made to expire (the rooms sweep) or deleted (the room was deleted).
-- KEYS: online, latency, users, metrics. ARGV: seconds to keep them, then "expire" or "drop".
-- Nothing changes while a session is online. "expire" gives the keys that have no TTL one (a room
-- emptied by a path that set none: the reaper, an older version); "drop" deletes them.
-- Returns {online, 1 if the room still has live state (its metrics hash) else 0}.
local online = redis.call('ZCARD', KEYS[1])
if online > 0 then return {online, 1} end
if ARGV[2] == 'drop' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return {0, 0}
end
local ttl = tonumber(ARGV[1]) or 0
if ttl > 0 then
  for i = 2, 4 do
    if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
return {0, redis.call('EXISTS', KEYS[4])}
