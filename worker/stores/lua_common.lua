-- Helpers prepended to every script of worker/stores/slots.lua, coalesce.lua and bulk_store.lua
-- (worker/stores/lua.py). Redis 5+: scripts replicate their effects, so TIME may precede writes.

-- The caller's clock (epoch seconds as text) or, when it sends '', the Redis server's: one
-- clock for every worker on every machine.
local function clock(arg)
  if arg == nil or arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  -- Validated by the caller (worker/stores/lua.py: epoch_arg).
  return tonumber(arg)
end

-- Exact text for a number: Lua's tostring keeps 14 digits, Redis truncates returned numbers.
local function num(x)
  return string.format('%.6f', x)
end

local function int(x)
  return string.format('%d', x)
end

-- Set a key's TTL to at least `ms` milliseconds; a longer TTL is kept (callers with different
-- settings must not cut each other's leases short). Missing keys are left alone.
local function extend_pttl(key, ms)
  local current = redis.call('PTTL', key)
  if current == -1 or (current >= 0 and current < ms) then
    redis.call('PEXPIRE', key, ms)
  end
end

