--[[
ssehub_version: which library is loaded, so a replica can tell whether to load its own.

  FCALL_RO ssehub_version 0

Returns  { version, limits } (limits: each deployment's, by key prefix, as filled in at load)
]]
redis.register_function({
  function_name = 'ssehub_version',
  callback = function() return { LIBRARY_VERSION, SETTINGS_TEXT } end,
  flags = { 'no-writes' },
})
