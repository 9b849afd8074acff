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
-- The room's count, its peak and its metrics fields are read once and kept here while the batch
-- runs (nothing else runs meanwhile), then written once: the same end state as one call per
-- session, with four calls per session instead of eleven.
local card = redis.call('ZCARD', online_key)
local peak_hour, peak, peak_changed
local meta_written, capacity, code, tenant
local answers = {}
local admitted = false
local n, a = 0, 1
while a <= #ARGV do
  n = n + 1
  local count = tonumber(ARGV[a])
  local b = a  -- the session's i-th argument is ARGV[b + i]
  a = a + 1 + count
  local sid, now, user, hour, ttl = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5])
  local limit = tonumber(ARGV[b + 9]) or 0
  local session_key = KEYS[4 + n]
  if limit > 0 and card >= limit and not redis.call('ZSCORE', online_key, sid) then
    answers[n] = -1
  else
    capacity, code, tenant = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
    if not meta_written then
      redis.call('HSET', metrics_key, 'capacity', capacity, 'code', code, 'tenant', tenant)
      meta_written = {capacity, code, tenant}
      peak_hour = redis.call('HGET', metrics_key, 'peak_hour')
      peak = tonumber(redis.call('HGET', metrics_key, 'peak') or '0')
    end
    if count > 9 then redis.call('HSET', session_key, unpack(ARGV, b + 10, b + count)) end
    redis.call('EXPIRE', session_key, ttl)
    local added = redis.call('ZADD', online_key, now, sid)
    if added == 1 then
      redis.call('HINCRBY', users_key, user, 1)
      card = card + 1
    end
    if peak_hour ~= hour or card > peak then
      peak, peak_hour, peak_changed = card, hour, true
    end
    answers[n] = card
    admitted = true
  end
end
if admitted then
  -- The last admitted session's metrics fields stand, as with one call each.
  if meta_written[1] ~= capacity or meta_written[2] ~= code or meta_written[3] ~= tenant then
    redis.call('HSET', metrics_key, 'capacity', capacity, 'code', code, 'tenant', tenant)
  end
  if peak_changed then redis.call('HSET', metrics_key, 'peak', peak, 'peak_hour', peak_hour) end
  for i = 1, 4 do redis.call('PERSIST', KEYS[i]) end
end
return answers
