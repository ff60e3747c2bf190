#!lua name=ssehub
-- Library version 5 of ssehub (0 keys, global epoch, JSON validation in Lua), kept as a fixed
-- baseline for bench/redis-function-cost.mjs. Rendered from REDIS_LIBRARY in
-- `git show 815c990:src/transport/redis-library.ts` with MAX_JSON_DEPTH = 64 and
-- MAX_USER_ID_LENGTH = 512 (src/wire/envelope.ts at that commit); nothing else changed.
-- ssehub history library, version 5
local KINDS = { agui = true, a2a = true, system = true, analytics = true }
local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'

local function base36(n)
  local out = ''
  repeat
    local d = n % 36
    out = string.sub(DIGITS, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return out
end

-- A decoder as strict as the hub's JSON.parse (no NaN, hex or leading zeros), with its depth limit.
local strict_json
local function decode_strictly(text)
  if not strict_json then
    strict_json = cjson.new()
    strict_json.decode_invalid_numbers(false)
    strict_json.decode_max_depth(64)
  end
  return pcall(strict_json.decode, text)
end

-- UTF-8 validity (no overlongs, surrogates or code points past U+10FFFF) and length in UTF-16
-- units, as the hub counts user ids. ASCII runs are skipped by string.find.
local function utf8_units(s)
  local i, n, units = 1, #s, 0
  while i <= n do
    local j = string.find(s, '[\128-\255]', i)
    if not j then return units + (n - i + 1) end
    units = units + (j - i)
    local c = string.byte(s, j)
    local len, min, max = 0, 128, 191
    if c >= 194 and c <= 223 then len = 1
    elseif c >= 224 and c <= 239 then
      len = 2
      if c == 224 then min = 160 elseif c == 237 then max = 159 end
    elseif c >= 240 and c <= 244 then
      len = 3
      if c == 240 then min = 144 elseif c == 244 then max = 143 end
    else return nil end
    for k = 1, len do
      local b = string.byte(s, j + k)
      if b == nil then return nil end
      if k == 1 then
        if b < min or b > max then return nil end
      elseif b < 128 or b > 191 then return nil end
    end
    units = units + (len == 3 and 2 or 1)
    i = j + len + 1
  end
  return units
end

-- What cjson lets through but JSON (and the hub's parser) does not: raw control characters in
-- strings, and numbers such as 2. or .5 outside them.
local function json_number(token)
  return string.find(token, '^%-?%d+$') or string.find(token, '^%-?%d+%.%d+$')
    or string.find(token, '^%-?%d+[eE][%+%-]?%d+$') or string.find(token, '^%-?%d+%.%d+[eE][%+%-]?%d+$')
end

local function strict_tokens(s)
  if string.find(s, '[%z\1-\8\11\12\14-\31]') then return false end
  local i, n = 1, #s
  while i <= n do
    local quote = string.find(s, '"', i, true)
    for token in string.gmatch(string.sub(s, i, (quote or n + 1) - 1), '[%-%d%.][%w%.%+%-]*') do
      if not json_number(token) then return false end
    end
    if not quote then return true end
    local k = quote + 1
    while true do
      local m = string.find(s, '["\\\t\n\r]', k)
      if not m then return false end
      local b = string.byte(s, m)
      if b == 92 then k = m + 2
      elseif b == 34 then i = m + 1; break
      else return false end
    end
  end
  return true
end

local function prefix_of(value)
  if value == nil or value == '' then return 'ssehub' end
  return value
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function epoch_of(prefix)
  local key = prefix .. ':epoch'
  local epoch = redis.call('GET', key)
  if not epoch then
    local t = redis.call('TIME')
    epoch = base36(tonumber(t[1]) * 1000000 + tonumber(t[2]))
    redis.call('SET', key, epoch)
  end
  return epoch
end

-- A whole number within bounds, the default when unset, nil when set to anything else.
local function setting(value, default, min, max)
  if not value then return default end
  local n = tonumber(value)
  if n and n == math.floor(n) and n >= min and n <= max then return n end
  return nil
end

local function settings(prefix)
  local cfg = redis.call('HMGET', prefix .. ':config', 'history_max', 'history_ttl_ms', 'max_event_bytes', 'history_max_bytes')
  return setting(cfg[1], 1000, 1, 10000000),
    setting(cfg[2], 3600000, 1000, 31536000000),
    setting(cfg[3], 1048576, 64, 1073741824),
    setting(cfg[4], 16777216, 64, 1099511627776)
end

-- The event bytes of a stream entry (XRANGE shape: { id, { 'k', kind, 'e', event } }).
local function entry_bytes(entry)
  local fields = entry[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'e' then return #fields[i + 1] end
  end
  return 0
end

local function split_id(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function publish(args)
  local kind, user, event, prefix = args[1], args[2], args[3], prefix_of(args[4])
  if kind == nil or not KINDS[kind] then
    return redis.error_reply('ERR ssehub: unknown kind ' .. tostring(kind) .. ' (agui, a2a, system, analytics)')
  end
  local user_units = user and #user <= 2048 and not string.find(user, '\0', 1, true) and utf8_units(user)
  if not user_units or user_units == 0 or user_units > 512 then
    return redis.error_reply('ERR ssehub: user_id must be 1 to 512 characters of valid UTF-8, without NUL')
  end
  local max, ttl, max_bytes, budget = settings(prefix)
  if not (max and ttl and max_bytes and budget) then
    return redis.error_reply('ERR ssehub: ' .. prefix .. ':config holds an invalid setting')
  end
  if event == nil or #event > max_bytes then
    return redis.error_reply('ERR ssehub: event must be at most ' .. max_bytes .. ' bytes')
  end
  if not utf8_units(event) then
    return redis.error_reply('ERR ssehub: event must be valid UTF-8')
  end
  local decoded_ok, decoded = decode_strictly(event)
  if not decoded_ok or type(decoded) ~= 'table' or not string.find(event, '^[ \t\r\n]*{') or not strict_tokens(event) then
    return redis.error_reply('ERR ssehub: event must be a JSON object nested at most 64 levels deep')
  end

  -- Live delivery sends the event's own bytes, without surrounding whitespace; so does replay.
  local first_byte = string.find(event, '[^ \t\r\n]')
  local last_byte = #event
  while string.find(' \t\r\n', string.sub(event, last_byte, last_byte), 1, true) do last_byte = last_byte - 1 end
  event = string.sub(event, first_byte, last_byte)

  local history_key = prefix .. ':h:' .. user
  local last_key = prefix .. ':n:' .. user
  local bytes_key = prefix .. ':b:' .. user
  local now = now_ms()
  local ms, seq = now, 1
  local last = redis.call('GET', last_key)
  local last_ms, last_seq
  if last then
    last_ms, last_seq = split_id(last)
    if not last_ms then return redis.error_reply('ERR ssehub: ' .. last_key .. ' holds an invalid id') end
    if last_ms > ms then ms = last_ms end
    seq = last_seq + 1
  end
  -- Everything that can fail is checked: from here on, every write happens or none was needed.
  local epoch = epoch_of(prefix)
  if not last then
    -- A history without its counter cannot be continued consistently: start over.
    redis.call('DEL', history_key, bytes_key)
  end
  local stream_id = string.format('%.0f-%.0f', ms, seq)
  redis.call('XADD', history_key, stream_id, 'k', kind, 'e', event)
  -- A stream written by an older library has no byte count: its older entries count as empty.
  local bytes = redis.call('INCRBY', bytes_key, #event)
  local len = redis.call('XLEN', history_key)
  -- The oldest entries go once past the count, the byte budget or retention; never the newest.
  -- Each is read once more to learn its size, about what publishing it cost.
  local evicted, cursor = 0, '-'
  while len - evicted > 1 do
    local oldest = redis.call('XRANGE', history_key, cursor, '+', 'COUNT', 1)[1]
    local oldest_ms = split_id(oldest[1])
    if len - evicted <= max and bytes <= budget and oldest_ms >= now - ttl then break end
    bytes = bytes - entry_bytes(oldest)
    evicted = evicted + 1
    cursor = '(' .. oldest[1]
  end
  if evicted > 0 then
    redis.call('XTRIM', history_key, 'MAXLEN', len - evicted)
    redis.call('SET', bytes_key, math.max(bytes, 0))
  end
  redis.call('PEXPIRE', history_key, ttl)
  redis.call('PEXPIRE', bytes_key, ttl)
  redis.call('SET', last_key, stream_id, 'PX', ttl)

  local id = epoch .. ':' .. stream_id
  local envelope = '{"id":"' .. id .. '","user_id":' .. cjson.encode(user) .. ',"event":' .. event .. '}'
  local receivers = redis.call('PUBLISH', prefix .. ':' .. kind, envelope)
  return { id, receivers }
end

redis.register_function(
  'ssehub_publish',
  function(keys, args)
    local result = publish(args)
    if type(result) == 'table' and result.err then return result end
    return result[1]
  end
)

redis.register_function('ssehub_publish_counted', function(keys, args) return publish(args) end)

-- Replicas of library version 4 read whole replays with this; it stays, unchanged, so they keep
-- working while a rolling upgrade (or another deployment on this Redis) still runs them.
-- args: user, from ('' for none, else <ms>-<seq>), count, prefix
-- returns: { epoch, last id or '', first id or '', entries from 'from' on (XRANGE shape), ttl ms }
redis.register_function('ssehub_history', function(keys, args)
  local user, from, count, prefix = args[1], args[2], tonumber(args[3]), prefix_of(args[4])
  local epoch = epoch_of(prefix)
  local history_key = prefix .. ':h:' .. user
  local last = redis.call('GET', prefix .. ':n:' .. user) or ''
  local first = ''
  local entries = {}
  if from ~= '' and count > 0 then
    local oldest = redis.call('XRANGE', history_key, '-', '+', 'COUNT', 1)
    if #oldest > 0 then first = oldest[1][1] end
    entries = redis.call('XRANGE', history_key, from, '+', 'COUNT', count)
  end
  local _, ttl = settings(prefix)
  return { epoch, last, first, entries, ttl or 3600000 }
end)

-- args: user, from ('' for none, else <ms>-<seq>), max entries, max bytes, prefix
-- returns: { epoch, last id or '', first id or '', page, ttl ms }. The page holds the entries
-- after 'from' (XRANGE shape), at most max entries, stopping before their event bytes pass max
-- bytes (the first is returned however large); read one at a time, so no call copies more.
-- The first id is only looked up when the page does not start right after 'from'.
redis.register_function('ssehub_history_page', function(keys, args)
  local user, from, max_entries, max_bytes, prefix = args[1], args[2], tonumber(args[3]), tonumber(args[4]), prefix_of(args[5])
  local epoch = epoch_of(prefix)
  local history_key = prefix .. ':h:' .. user
  local last = redis.call('GET', prefix .. ':n:' .. user) or ''
  local first = ''
  local page = {}
  if from ~= '' and max_entries > 0 then
    local cursor, bytes = '(' .. from, 0
    while #page < max_entries do
      local entry = redis.call('XRANGE', history_key, cursor, '+', 'COUNT', 1)[1]
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
      local oldest = redis.call('XRANGE', history_key, '-', '+', 'COUNT', 1)
      if #oldest > 0 then first = oldest[1][1] end
    end
  end
  local _, ttl = settings(prefix)
  return { epoch, last, first, page, ttl or 3600000 }
end)

-- args: key, events limit, bytes limit, window ms, bytes of this publish
-- returns: 0 when the publish fits the window (and counts it), else the ms until the window ends.
-- One counter per principal and window, shared by every replica.
redis.register_function('ssehub_take_quota', function(keys, args)
  local key, max_events, max_bytes, window, bytes = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
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
