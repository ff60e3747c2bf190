--[[
ssehub_publish_batch: publishes several events of one user in one call (bursts of AG-UI deltas),
with consecutive ids, as one message on the user's channel. Nothing is published when any event
is refused.

  FCALL ssehub_publish_batch 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <kind> <event> [<kind> <event> ...]

KEYS[1]  the user's meta hash        KEYS[2]  the user's history stream
ARGV     kind and event pairs, at least one
Returns  { receivers, id, id, ... }, one id per event in order
Errors   as ssehub_publish, naming the 1-based position of the refused event
]]
redis.register_function('ssehub_publish_batch', function(keys, args)
  local meta, history, channel, settings = check_keys(keys)
  if not meta then return redis.error_reply('ERR ssehub: ' .. history) end
  if #args == 0 or #args % 2 ~= 0 then return redis.error_reply('ERR ssehub: arguments must be <kind> <event> pairs') end
  local events = {}
  for i = 1, #args, 2 do
    local problem = check_event(args[i], args[i + 1], settings)
    if problem then return redis.error_reply('ERR ssehub: event ' .. ((i + 1) / 2) .. ': ' .. problem) end
    events[#events + 1] = { args[i], args[i + 1] }
  end
  local ids, receivers = append(meta, history, channel, events, settings)
  table.insert(ids, 1, receivers)
  return ids
end)
