--[[
ssehub_publish: publishes one event of one user, with the user's next id, into the user's history
and onto the user's channel, all or nothing.

  FCALL ssehub_publish 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <kind> <event-json>
  FCALL ssehub_publish 0 <kind> <user_id> <event-json> [<prefix>]    (library v5 form, single Redis only)

KEYS[1]  the user's meta hash        KEYS[2]  the user's history stream
ARGV     kind (agui, a2a, system, analytics), event (a JSON object's bytes)
Returns  the event's id, "<epoch>:<ms>-<seq>"
Errors   "ERR ssehub: unknown kind ...", "ERR ssehub: event must be ...", "ERR ssehub: keys must be ...",
         "ERR ssehub: no limits loaded for prefix ..." (no replica of that deployment connected yet)
]]
redis.register_function('ssehub_publish', function(keys, args)
  local result = publish_one(keys, args)
  if result.err then return result end
  return result[1]
end)

--[[
ssehub_publish_counted: ssehub_publish, returning how many subscribers (replicas) got the event.
Returns  { id, receivers }
]]
redis.register_function('ssehub_publish_counted', publish_one)
