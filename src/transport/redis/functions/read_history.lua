--[[
ssehub_read_history: one page of a user's history after an id, with what a replay needs to prove
it complete. Creates the user's epoch when there is none yet (or a new one, as publishing would),
so a stream that opens before the user's first event already has the epoch that event will get.

  FCALL ssehub_read_history 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <from> <max-entries> <max-bytes>

KEYS[1]  the user's meta hash        KEYS[2]  the user's history stream
ARGV     from ('' for none, else <ms>-<seq>), most entries, most event bytes in the page
Returns  { epoch, last id or '', first id or '', page, ttl ms }. The page holds the entries after
         'from' (XRANGE shape), at most max entries, stopping before their event bytes pass max
         bytes (the first is returned however large). The first id is only looked up when the
         page does not start right after 'from'.
]]
redis.register_function('ssehub_read_history', function(keys, args)
  local meta, history, _, settings = check_keys(keys)
  if not meta then return redis.error_reply('ERR ssehub: ' .. history) end
  local from, max_entries, max_bytes = args[1], tonumber(args[2]), tonumber(args[3])
  local m = meta_of(meta, history, settings)
  local epoch, last = m[1], m[3]
  local first = ''
  local page = {}
  if from ~= '' and last and max_entries > 0 then
    local cursor, bytes = '(' .. from, 0
    while #page < max_entries do
      local entry = redis.call('XRANGE', history, cursor, '+', 'COUNT', 1)[1]
      if not entry then break end
      local size = entry_bytes(entry)
      if #page > 0 and bytes + size > max_bytes then break end
      page[#page + 1] = entry
      bytes = bytes + size
      cursor = '(' .. entry[1]
    end
    local _, from_seq = split_id(from)
    local next_seq = page[1] and select(2, split_id(page[1][1]))
    if next_seq ~= from_seq + 1 then
      local oldest = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)
      if #oldest > 0 then first = oldest[1][1] end
    end
  end
  return { epoch, last or '', first, page, settings.history_ttl_ms }
end)
