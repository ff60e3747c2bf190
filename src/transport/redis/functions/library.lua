--[[
The ssehub function library: shared state and helpers for the functions after it. Loaded as one
library (FUNCTION LOAD REPLACE) by every replica when it connects, with the settings below filled
in from the replica's configuration: kinds and limits are fixed at load, not read per call.

Keys of one user (the tag is the user id with %, { and } percent-encoded, so that any user id,
braces included, gives a hash tag of its own and all of a user's keys share one cluster slot):
  <prefix>:{<tag>}:h   stream of the user's events (fields k = kind, e = event, o = event bytes
                       appended to the stream before this one), ids <ms>-<seq>
  <prefix>:{<tag>}:m   hash: e = epoch, w = the run id of the Redis that wrote the history last
                       (c = its cluster node id), n = last id (<ms>-<seq>), t = event bytes ever
                       appended, f = bytes appended before the oldest entry (as last read),
                       x = when both keys expire (ms)
Channel of one user (sharded pub/sub, SPUBLISH):
  <prefix>:{<tag>}     records "<kind> <id> <length> <event>", one or more back to back

There is no global key. A user's epoch names one incarnation of the user's history: it is new
when the history is created, and when the Redis that holds it is not the one that wrote it last
and got it asynchronously (a failover: replication; a restart: the append-only file), since the
newest acknowledged events may be missing there. A slot moved from a healthy primary keeps its
epochs (MIGRATE moves keys whole). A client resuming from an older epoch gets a reset, never a
silent gap.
]]
local LIBRARY_VERSION = __LIBRARY_VERSION__
local KINDS = { __KINDS__ }
local MAX_KEY_BYTES = __MAX_KEY_BYTES__
-- The limits of each deployment sharing this Redis, by key prefix, as the replicas loaded them:
-- "<prefix>=<max event bytes>,<history max>,<history max bytes>,<history ttl ms>;..."
local SETTINGS_TEXT = '__SETTINGS__'
-- Parsed on first use: the standard libraries are not there while a library loads.
local SETTINGS
local function settings_for(prefix)
  if not SETTINGS then
    SETTINGS = {}
    for name, a, b, c, d in string.gmatch(SETTINGS_TEXT, '([^=;]+)=(%d+),(%d+),(%d+),(%d+)') do
      SETTINGS[name] = {
        max_event_bytes = tonumber(a), history_max = tonumber(b), history_max_bytes = tonumber(c), history_ttl_ms = tonumber(d),
      }
    end
  end
  return SETTINGS[prefix]
end
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

-- This Redis's run id, read once per library load: it changes with every restart and differs on
-- every node, which is what tells a history written elsewhere from one written here.
local run_id
local function writer()
  if not run_id then
    run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'
  end
  return run_id
end

-- This node's cluster id, false outside a cluster; read once per library load.
local node_id
local function cluster_node()
  if node_id == nil then
    node_id = string.match(redis.call('INFO', 'cluster'), 'cluster_enabled:1') and redis.call('CLUSTER', 'MYID') or false
  end
  return node_id
end

-- A history written on another node that is still a healthy primary came here by a slot
-- migration, which moves keys whole: nothing is missing. One written by a node that failed, turned
-- replica, or is this node before a restart came by replication or from disk, both asynchronous.
local function moved_whole(written_on)
  local here = cluster_node()
  if not here or not written_on or written_on == here then return false end
  for line in string.gmatch(redis.call('CLUSTER', 'NODES'), '[^\n]+') do
    local id, flags = string.match(line, '^(%x+) %S+ (%S+)')
    if id == written_on then
      return string.find(flags, 'master', 1, true) ~= nil and string.find(flags, 'fail', 1, true) == nil
    end
  end
  return false
end

local function split_id(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- The event bytes of a stream entry (XRANGE shape: { id, { 'k', kind, 'e', event } }).
local function entry_bytes(entry)
  local fields = entry[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'e' then return #fields[i + 1] end
  end
  return 0
end

-- The user's keys, channel and the limits of the deployment the key prefix names; nil and an
-- error text when the keys are not a user's, or no replica of that deployment loaded its limits.
local function check_keys(keys)
  local meta, history = keys[1], keys[2]
  if not meta or not history or #meta > MAX_KEY_BYTES or string.sub(meta, -2) ~= ':m'
    or string.sub(history, 1, -3) ~= string.sub(meta, 1, -3) or string.sub(history, -2) ~= ':h' then
    return nil, 'keys must be <prefix>:{<tag>}:m and <prefix>:{<tag>}:h'
  end
  local at = string.find(meta, ':{', 1, true)
  local prefix = at and string.sub(meta, 1, at - 1)
  local settings = prefix and settings_for(prefix)
  if not settings then
    return nil, 'no limits loaded for prefix ' .. tostring(prefix) .. ' (a replica of that deployment loads them when it connects)'
  end
  return meta, history, string.sub(meta, 1, -3), settings
end

local function keys_of(prefix, user)
  local tag = string.gsub(user, '[%%{}]', { ['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D' })
  local base = prefix .. ':{' .. tag .. '}'
  return { base .. ':m', base .. ':h' }
end

-- The user's meta fields e (epoch), w (writer's run id), n (last id), t (event bytes ever
-- appended), f (the appended bytes before the oldest entry, as last read), x (when the keys
-- expire), c (writer's cluster node id); a new epoch (and an empty history) when there is none, or
-- when another Redis wrote it last and the history may be missing its newest events (a failover,
-- a restart). Only functions that may write call it.
local function meta_of(meta, history, settings)
  local m = redis.call('HMGET', meta, 'e', 'w', 'n', 't', 'f', 'x', 'c')
  if m[1] and m[2] == writer() then return m end
  if m[1] and moved_whole(m[7]) then
    redis.call('HSET', meta, 'w', writer(), 'c', cluster_node())
    return m
  end
  local t = redis.call('TIME')
  local epoch = base36(tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('DEL', history, meta)
  redis.call('HSET', meta, 'e', epoch, 'w', writer(), 'c', cluster_node() or '')
  redis.call('PEXPIRE', meta, settings.history_ttl_ms)
  return { epoch, writer(), false, false, false, false, false }
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Only what protects Redis and the records' framing is checked here; the replicas check each
-- event as JSON when they deliver or replay it, and drop (and count) what fails.
local function check_event(kind, event, settings)
  if kind == nil or not KINDS[kind] then
    return 'unknown kind ' .. tostring(kind) .. ' (' .. '__KIND_LIST__' .. ')'
  end
  if event == nil or #event == 0 or #event > settings.max_event_bytes then
    return 'event must be 1 to ' .. settings.max_event_bytes .. ' bytes'
  end
  if string.byte(event, 1) ~= 123 or string.byte(event, -1) ~= 125 then
    return 'event must be a JSON object, from its { to its } without surrounding whitespace'
  end
  return nil
end

-- Appends events ({ kind, event } pairs, already checked) to the user's history and publishes
-- them as one message. Every Redis call costs microseconds, so the common case makes four:
-- HMGET, XADD (which trims to the count itself), HSET and SPUBLISH. Each entry carries the bytes
-- appended before it (o), so the byte budget is checked from the meta alone and the oldest
-- entries are only read when the budget may be passed. The keys' expiry is pushed out to twice
-- the retention once less than the retention is left, not on every call.
-- Returns the events' ids and the subscribers that got the message.
local function append(meta, history, channel, events, settings)
  local now = now_ms()
  local m = meta_of(meta, history, settings)
  local HISTORY_MAX, HISTORY_MAX_BYTES, HISTORY_TTL_MS = settings.history_max, settings.history_max_bytes, settings.history_ttl_ms
  local epoch, total, oldest_offset = m[1], tonumber(m[4]) or 0, tonumber(m[5]) or 0
  local ms, seq = now, 0
  if m[3] then
    local last_ms, last_seq = split_id(m[3])
    if last_ms then
      if last_ms > ms then ms = last_ms end
      seq = last_seq
    end
  end
  local ids, records = {}, {}
  for i = 1, #events do
    local kind, event = events[i][1], events[i][2]
    seq = seq + 1
    local stream_id = string.format('%.0f-%.0f', ms, seq)
    redis.call('XADD', history, 'MAXLEN', HISTORY_MAX, stream_id, 'k', kind, 'e', event, 'o', total)
    total = total + #event
    local id = epoch .. ':' .. stream_id
    ids[i] = id
    records[i] = kind .. ' ' .. id .. ' ' .. #event .. ' ' .. event
  end
  local fields = { 'n', string.format('%.0f-%.0f', ms, seq), 't', total }
  if total - oldest_offset > HISTORY_MAX_BYTES then
    -- The oldest entries go until the rest fits the budget; never the newest.
    local cursor, oldest, keep = '-', nil, nil
    repeat
      oldest = redis.call('XRANGE', history, cursor, '+', 'COUNT', 2)
      local first, second = oldest[1], oldest[2]
      oldest_offset = tonumber(first[2][6]) or 0
      if total - oldest_offset <= HISTORY_MAX_BYTES or not second then keep = first[1] break end
      cursor = '(' .. first[1]
    until false
    redis.call('XTRIM', history, 'MINID', keep)
    fields[#fields + 1] = 'f'
    fields[#fields + 1] = oldest_offset
  end
  local expires = tonumber(m[6])
  if not expires or expires - now < HISTORY_TTL_MS then
    redis.call('PEXPIRE', meta, 2 * HISTORY_TTL_MS)
    redis.call('PEXPIRE', history, 2 * HISTORY_TTL_MS)
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = now + 2 * HISTORY_TTL_MS
  end
  redis.call('HSET', meta, unpack(fields))
  local receivers = redis.call('SPUBLISH', channel, table.concat(records))
  return ids, receivers
end

local function publish_one(keys, args)
  local kind, event = args[1], args[2]
  if #keys == 0 then
    -- The form of library version 5 and earlier: FCALL ssehub_publish 0 <kind> <user> <event> [<prefix>].
    -- Its keys are not declared, so it works on a single Redis only.
    local user, prefix = args[2], args[4]
    if user == nil or #user == 0 or #user > 2048 then return redis.error_reply('ERR ssehub: user_id must be 1 to 2048 bytes') end
    if prefix == nil or prefix == '' then prefix = 'ssehub' end
    keys, event = keys_of(prefix, user), args[3]
  end
  local meta, history, channel, settings = check_keys(keys)
  if not meta then return redis.error_reply('ERR ssehub: ' .. history) end
  local problem = check_event(kind, event, settings)
  if problem then return redis.error_reply('ERR ssehub: ' .. problem) end
  local ids, receivers = append(meta, history, channel, { { kind, event } }, settings)
  return { ids[1], receivers }
end
