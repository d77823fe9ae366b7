-- Shared settings loader for the Lua plugins: a Lua file that returns a table, named by
-- $CORDON_LUA_SETTINGS (default /etc/cordon/plugin-settings.lua). Errors name file and key.
local S = {}

local function fail(path, key, message)
  error("cordon: " .. path .. ": " .. key .. ": " .. message, 0)
end

local function addresses(path, t, key, pattern, family)
  local v = t[key]
  if v == nil then return {} end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then fail(path, key, "a list of " .. family .. " addresses") end
  for _, a in ipairs(v) do
    if type(a) ~= "string" or not a:match(pattern) then
      fail(path, key, tostring(a) .. " is not an " .. family .. " address")
    end
  end
  return v
end

local function number(path, t, key, default, low, high)
  local v = t[key]
  if v == nil then return default end
  if type(v) ~= "number" then fail(path, key, "a number") end
  if v < low or v > high then
    fail(path, key, v .. " is not within " .. low .. ".." .. high)
  end
  return v
end

function S.load(path)
  path = path or os.getenv("CORDON_LUA_SETTINGS") or "/etc/cordon/plugin-settings.lua"
  local chunk, err = loadfile(path)
  if not chunk then error("cordon: " .. tostring(err), 0) end
  local ok, t = pcall(chunk)
  if not ok then error("cordon: " .. path .. ": " .. tostring(t), 0) end
  if type(t) ~= "table" then error("cordon: " .. path .. ": must return a table", 0) end
  local known = { index = 1, ipv4 = 1, ipv6 = 1, ttl = 1, reload_interval = 1, ede_text = 1,
                  after_change = 1 }
  for k in pairs(t) do
    if not known[k] then fail(path, tostring(k), "unknown setting") end
  end
  if type(t.index) ~= "string" then fail(path, "index", "give the path of the index file") end
  local ede = t.ede_text or "blocked by the national list"
  if type(ede) ~= "string" or #ede > 255 then fail(path, "ede_text", "at most 255 bytes") end
  local after = t.after_change or {}
  if type(after) ~= "table" then fail(path, "after_change", "a command as a list of strings") end
  for _, a in ipairs(after) do
    if type(a) ~= "string" then fail(path, "after_change", "a command as a list of strings") end
  end
  return {
    after_change = after,
    index = t.index,
    ipv4 = addresses(path, t, "ipv4", "^%d+%.%d+%.%d+%.%d+$", "IPv4"),
    ipv6 = addresses(path, t, "ipv6", "^[%x:%.]+:[%x:%.]*$", "IPv6"),
    ttl = number(path, t, "ttl", 60, 0, 86400),
    reload_interval = number(path, t, "reload_interval", 0.5, 0.05, 3600),
    ede_text = ede,
  }
end

return S
