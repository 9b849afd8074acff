-- Heartbeats of one room, coalesced. KEYS: online, latency.
-- ARGV[1]: "sessionId nowMs latencyMs" lines joined by "\n" (one argument: packing 3 arguments
-- per heartbeat costs the server more Python time than Redis spends on the whole script).
-- latencyMs "-": the heartbeat carried no latency; the session's last reported one stays.
-- ZADD XX: a heartbeat never resurrects a session that some other path removed.
local z, h = {}, {}
for sid, ts, lat in string.gmatch(ARGV[1], '([^ \n]+) ([^ \n]+) ([^ \n]+)') do
  z[#z + 1] = ts
  z[#z + 1] = sid
  if lat ~= '-' then
    h[#h + 1] = sid
    h[#h + 1] = lat
  end
  if #z >= 4000 then
    redis.call('ZADD', KEYS[1], 'XX', unpack(z))
    if #h > 0 then redis.call('HSET', KEYS[2], unpack(h)) end
    z, h = {}, {}
  end
end
if #z > 0 then
  redis.call('ZADD', KEYS[1], 'XX', unpack(z))
end
if #h > 0 then
  redis.call('HSET', KEYS[2], unpack(h))
end
return #z / 2
