-- Sessions join a room, in order: one call admits a batch (the joins of one room gathered by one
-- flush). KEYS: online, latency, users, metrics, then one session hash per session, in order.
-- ARGV, per session: the count of its arguments, then its arguments: sessionId, nowMs, userId,
-- hour, ttlSeconds, capacity, code, tenant, limit, then field/value pairs (scripts.join_args).
-- Returns one answer per session: the room's online count after its join, or -1 (nothing written
-- for it) when the room already held `limit` sessions of any node: capacity is enforced here,
-- cluster-wide, not per process. limit 0 admits unconditionally (a node that admitted on its
-- local count while Redis was down). A session already in the room (a replayed join) is always
-- admitted: it takes no new place. Each session is checked after the ones before it in the call,
-- exactly as if each had its own call. A room that had emptied (its keys expiring, leave.lua)
-- keeps them again once a session is admitted.
local online_key, users_key, metrics_key = KEYS[1], KEYS[3], KEYS[4]
-- The room's count, who is in it, its peak and its metrics fields are read once and kept here
-- while the batch runs (nothing else runs meanwhile), then written once: the same end state as
-- one call per session. Per session: its hash (HSET, EXPIRE) and its user's count (HINCRBY); the
-- online entries of the batch go as one ZADD, the metrics fields as one HSET (only what changed).
local card = redis.call('ZCARD', online_key)
local sessions, starts = {}, {}
local a = 1
while a <= #ARGV do
  starts[#starts + 1] = a
  sessions[#sessions + 1] = ARGV[a + 1]
  a = a + 1 + tonumber(ARGV[a])
end
-- Whether each session is in the room already: one ZMSCORE (Redis 6.2) for the batch.
local present = {}
local scores = redis.call('ZMSCORE', online_key, unpack(sessions))
for n = 1, #sessions do
  if scores[n] then present[sessions[n]] = true end
end
local meta, peak_hour, peak, peak_changed, capacity, code, tenant
local answers, online = {}, {}
for n = 1, #starts do
  local b = starts[n]  -- the session's i-th argument is ARGV[b + i]
  local count = tonumber(ARGV[b])
  local sid, now, user, hour, ttl = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5])
  local limit = tonumber(ARGV[b + 9]) or 0
  local session_key = KEYS[4 + n]
  if limit > 0 and card >= limit and not present[sid] then
    answers[n] = -1
  else
    capacity, code, tenant = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
    if not meta then
      meta = redis.call('HMGET', metrics_key, 'capacity', 'code', 'tenant', 'peak_hour', 'peak')
      peak_hour, peak = meta[4], tonumber(meta[5] or '0')
    end
    if count > 9 then redis.call('HSET', session_key, unpack(ARGV, b + 10, b + count)) end
    redis.call('EXPIRE', session_key, ttl)
    online[#online + 1] = now  -- a replayed join moves its score too, as its own ZADD did
    online[#online + 1] = sid
    if not present[sid] then
      present[sid] = true
      redis.call('HINCRBY', users_key, user, 1)
      card = card + 1
    end
    if peak_hour ~= hour or card > peak then
      peak, peak_hour, peak_changed = card, hour, true
    end
    answers[n] = card
  end
end
if meta then
  -- One ZADD for the batch (a member given twice keeps its last score, as two calls left it).
  redis.call('ZADD', online_key, unpack(online))
  -- The last admitted session's metrics fields stand, as with one call each.
  local changed = {}
  if meta[1] ~= capacity or meta[2] ~= code or meta[3] ~= tenant then
    changed = {'capacity', capacity, 'code', code, 'tenant', tenant}
  end
  if peak_changed then
    changed[#changed + 1] = 'peak'
    changed[#changed + 1] = peak
    changed[#changed + 1] = 'peak_hour'
    changed[#changed + 1] = peak_hour
  end
  if #changed > 0 then redis.call('HSET', metrics_key, unpack(changed)) end
  for i = 1, 4 do redis.call('PERSIST', KEYS[i]) end
end
return answers
