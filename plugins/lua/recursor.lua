-- Cordon for PowerDNS Recursor: `lua-dns-script=/usr/share/cordon/lua/recursor.lua`.
--
-- preresolve answers a listed name (or a name below a listed domain) before any resolution:
-- A -> stop IPv4, AAAA -> stop IPv6, other types NODATA with a SOA, EDE 16 (Censored).
-- postresolve answers the same way when the resolved CNAME chain reaches a listed name.
-- Blocked answers are marked variable so the packet cache never keeps them (a delisted name
-- is freed at once); the packet cache does keep normal answers and is consulted before
-- preresolve, so set packetcache-ttl to the delay you accept between a list change and its
-- enforcement on names already cached (docs/plugins.md). Settings: settings.lua.
-- The daemon loads this file as a string, so it cannot find its neighbours by itself.
local here = (os.getenv("CORDON_LUA_DIR") or "/usr/share/cordon/lua"):gsub("/?$", "/")
local cordon = dofile(here .. "cordon.lua")
local settings = dofile(here .. "settings.lua").load()
settings.log = function(msg) pdnslog(msg, pdns.loglevels.Warning) end
cordon.configure(settings)

local EDE_CENSORED = 16
local soa = "stop.cordon.invalid. hostmaster.cordon.invalid. 1 3600 600 86400 " .. settings.ttl

local function block(dq)
  local ttl = settings.ttl
  dq.rcode = pdns.NOERROR
  if dq.qtype == pdns.A and #settings.ipv4 > 0 then
    for _, a in ipairs(settings.ipv4) do dq:addAnswer(pdns.A, a, ttl) end
  elseif dq.qtype == pdns.AAAA and #settings.ipv6 > 0 then
    for _, a in ipairs(settings.ipv6) do dq:addAnswer(pdns.AAAA, a, ttl) end
  else
    dq:addRecord(pdns.SOA, soa, pdns.place.AUTHORITY, ttl)
  end
  dq.extendedErrorCode = EDE_CENSORED
  dq.extendedErrorExtra = settings.ede_text
  dq.variable = true
end

local function dotless(text)
  text = text:lower()
  if text:sub(-1) == "." then text = text:sub(1, -2) end
  return text
end

function preresolve(dq)
  cordon.maybe_reload()
  if cordon.listed(dq.qname:toStringNoDot():lower()) then
    block(dq)
    return true
  end
  return false
end

function postresolve(dq)
  local records = dq:getRecords()
  for _, r in ipairs(records) do
    if r.type == pdns.CNAME and r.place == pdns.place.ANSWER then
      if cordon.listed(dotless(r.name:toString())) or cordon.listed(dotless(r:getContent())) then
        dq:setRecords({})
        block(dq)
        return true
      end
    end
  end
  return false
end

function maintenance()
  cordon.maybe_reload()
end
