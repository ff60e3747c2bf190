--[[
ssehub_version: which library is loaded, so a replica can tell whether to load its own.

  FCALL_RO ssehub_version 0

Returns  { version, settings } (settings: the kinds and limits filled in at load, as one string)
]]
redis.register_function({
  function_name = 'ssehub_version',
  callback = function() return { LIBRARY_VERSION, SETTINGS } end,
  flags = { 'no-writes' },
})
