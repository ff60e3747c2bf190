--[[
ssehub_take_quota: counts one publish against a principal's quota for the current window, shared
by every replica.

  FCALL ssehub_take_quota 1 <prefix>:q:<principal> <events-limit> <bytes-limit> <window-ms> <bytes>

KEYS[1]  the principal's window counter (hash: e = events, b = bytes)
Returns  0 when the publish fits the window (and is counted), else the ms until the window ends
]]
redis.register_function('ssehub_take_quota', function(keys, args)
  local key, max_events, max_bytes, window, bytes = keys[1], tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local used = redis.call('HMGET', key, 'e', 'b')
  local events, used_bytes = tonumber(used[1]) or 0, tonumber(used[2]) or 0
  if events + 1 > max_events or used_bytes + bytes > max_bytes then
    local left = redis.call('PTTL', key)
    return left > 0 and left or window
  end
  redis.call('HINCRBY', key, 'e', 1)
  redis.call('HINCRBY', key, 'b', bytes)
  if events == 0 then redis.call('PEXPIRE', key, window) end
  return 0
end)
