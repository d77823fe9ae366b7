-- Cordon for dnsdist (1.7+): in dnsdist.conf
--   dofile("/usr/share/cordon/lua/dnsdist.lua")
--   addAction(AllRule(), LuaFFIAction(cordon_query))
--   addResponseAction(AllRule(), LuaFFIResponseAction(cordon_response))
--
-- cordon_query answers a listed name (or a name below a listed domain) itself: A -> stop IPv4,
-- AAAA -> stop IPv6, other types NODATA with a SOA; EDE 16 (Censored) for EDNS clients. cordon_response rewrites a backend's answer whose
-- CNAME chain reaches a listed name into the same answer. Rules run before dnsdist's packet
-- cache is consulted, so a cached answer never hides a newly listed name; answers rewritten
-- by cordon_response are kept out of the cache. Settings: settings.lua.
local ffi = require("ffi")
local bit = require("bit")

local here = debug.getinfo(1, "S").source:match("^@(.*/)")
  or (os.getenv("CORDON_LUA_DIR") or "/usr/share/cordon/lua"):gsub("/?$", "/")
local cordon = dofile(here .. "cordon.lua")
local settings = dofile(here .. "settings.lua").load()
settings.log = function(msg) warnlog(msg) end
cordon.configure(settings)

local function cdef(text) pcall(ffi.cdef, text) end
cdef("typedef struct dnsdist_ffi_dnsquestion_t dnsdist_ffi_dnsquestion_t;")
cdef("typedef struct dnsdist_ffi_raw_value { const char* value; uint16_t size; } dnsdist_ffi_raw_value_t;")
cdef("void dnsdist_ffi_dnsquestion_get_qname_raw(const dnsdist_ffi_dnsquestion_t* dq, const char** qname, size_t* qnameSize);")
cdef("const void* dnsdist_ffi_dnsquestion_get_header(const dnsdist_ffi_dnsquestion_t* dq);")
cdef("uint16_t dnsdist_ffi_dnsquestion_get_len(const dnsdist_ffi_dnsquestion_t* dq);")
cdef("void dnsdist_ffi_dnsquestion_set_skip_cache(dnsdist_ffi_dnsquestion_t* dq, bool skipCache);")
cdef("void dnsdist_ffi_dnsquestion_set_len(dnsdist_ffi_dnsquestion_t* dq, uint16_t len);")
cdef("void dnsdist_ffi_dnsquestion_set_rcode(dnsdist_ffi_dnsquestion_t* dq, int rcode);")
local C = ffi.C

local TYPE_A, TYPE_AAAA, TYPE_CNAME = 1, 28, 5

-- The stop addresses as raw values, per query type (a query for another type gets none).
local function raw_addresses(list, family)
  local out = {}
  for _, text in ipairs(list) do
    local bytes = {}
    if family == 4 then
      for octet in text:gmatch("%d+") do bytes[#bytes + 1] = string.char(tonumber(octet)) end
    else
      -- Expand "::" then read eight 16-bit groups.
      local head, tail = text:match("^(.-)::(.*)$")
      local groups = {}
      local function split(s, into)
        for g in s:gmatch("[^:]+") do into[#into + 1] = g end
      end
      if head then
        local left, right = {}, {}
        split(head, left)
        split(tail, right)
        for _, g in ipairs(left) do groups[#groups + 1] = g end
        for _ = 1, 8 - #left - #right do groups[#groups + 1] = "0" end
        for _, g in ipairs(right) do groups[#groups + 1] = g end
      else
        split(text, groups)
      end
      for _, g in ipairs(groups) do
        local n = tonumber(g, 16)
        bytes[#bytes + 1] = string.char(bit.rshift(n, 8), bit.band(n, 255))
      end
    end
    out[#out + 1] = table.concat(bytes)
  end
  local values = ffi.new("dnsdist_ffi_raw_value_t[?]", math.max(#out, 1))
  for i, raw in ipairs(out) do
    values[i - 1].value = raw
    values[i - 1].size = #raw
  end
  return { values = values, count = #out, keep = out }
end

local spoof_v4 = raw_addresses(settings.ipv4, 4)
local spoof_v6 = raw_addresses(settings.ipv6, 6)

-- Lowercase dotted name from wire labels at p[pos] (pointers followed), or nil when malformed.
local function read_name(p, len, pos)
  local labels = {}
  local hops = 0
  while pos < len do
    local n = p[pos]
    if n == 0 then return table.concat(labels, ".") end
    if bit.band(n, 0xC0) == 0xC0 then
      if pos + 1 >= len or hops > 16 then return nil end
      pos = bit.band(n, 0x3F) * 256 + p[pos + 1]
      hops = hops + 1
    elseif n > 63 or pos + 1 + n > len then
      return nil
    else
      labels[#labels + 1] = ffi.string(p + pos + 1, n):lower()
      pos = pos + 1 + n
    end
  end
  return nil
end

-- Position after the wire name at p[pos], or nil.
local function skip_name(p, len, pos)
  while pos < len do
    local n = p[pos]
    if n == 0 then return pos + 1 end
    if bit.band(n, 0xC0) == 0xC0 then return pos + 2 end
    if n > 63 then return nil end
    pos = pos + 1 + n
  end
  return nil
end

local function u16(n) return string.char(bit.rshift(n, 8), bit.band(n, 255)) end
local function u32(n) return u16(bit.rshift(n, 16)) .. u16(bit.band(n, 0xFFFF)) end

local function wire_name(text)
  local out = {}
  for label in text:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return table.concat(out) .. "\0"
end

local ttl = settings.ttl
local soa_rdata = wire_name("stop.cordon.invalid") .. wire_name("hostmaster.cordon.invalid")
  .. u32(1) .. u32(3600) .. u32(600) .. u32(86400) .. u32(ttl)
local soa_rr = "\192\012" .. u16(6) .. u16(1) .. u32(ttl) .. u16(#soa_rdata) .. soa_rdata
local function ede(code, text)
  return u16(15) .. u16(2 + #text) .. u16(code) .. text
end
local opt_censored = ede(16, settings.ede_text)
local opt_forged = opt_censored .. ede(4, "")

-- Does the message at p carry an OPT record? (Walks every record after the question.)
local function has_opt(p, len, pos)
  local total = (p[6] + p[8] + p[10]) * 256 + p[7] + p[9] + p[11]
  for _ = 1, total do
    local first = p[pos]
    pos = skip_name(p, len, pos)
    if not pos or pos + 10 > len then return false end
    if first == 0 and p[pos] == 0 and p[pos + 1] == 41 then return true end
    pos = pos + 10 + p[pos + 8] * 256 + p[pos + 9]
  end
  return false
end

-- The blocked answer to the question of the message at p (a query, or a backend's answer):
-- same id and question, NOERROR, the stop addresses with pointers to the question name, or
-- NODATA with a SOA; EDE 16 (Censored, + 4 Forged Answer for an address) when EDNS was used.
local function blocked_answer(p, len)
  local qend = skip_name(p, len, 12)
  if not qend or qend + 4 > len then return nil end
  local qtype = p[qend] * 256 + p[qend + 1]
  local list, rtype = {}, 0
  if qtype == TYPE_A then
    list, rtype = spoof_v4.keep, TYPE_A
  elseif qtype == TYPE_AAAA then
    list, rtype = spoof_v6.keep, TYPE_AAAA
  end
  local records = {}
  for _, raw in ipairs(list) do
    records[#records + 1] = "\192\012" .. u16(rtype) .. u16(1) .. u32(ttl) .. u16(#raw) .. raw
  end
  local authority = #records == 0 and soa_rr or ""
  local opt = ""
  if has_opt(p, len, qend + 4) then
    local options = #records > 0 and opt_forged or opt_censored
    opt = "\0" .. u16(41) .. u16(1232) .. u32(0) .. u16(#options) .. options
  end
  local flags = bit.bor(0x8080, bit.band(p[2], 0x79) * 256)  -- QR, RA; opcode and RD kept
  return ffi.string(p, 2) .. u16(flags) .. u16(1) .. u16(#records)
    .. u16(#authority > 0 and 1 or 0) .. u16(#opt > 0 and 1 or 0)
    .. ffi.string(p + 12, qend + 4 - 12) .. table.concat(records) .. authority .. opt
end

-- Replace the message dnsdist holds for `dq` by `packet`.
local function replace(dq, packet)
  C.dnsdist_ffi_dnsquestion_set_len(dq, #packet)
  ffi.copy(ffi.cast("uint8_t*", C.dnsdist_ffi_dnsquestion_get_header(dq)), packet, #packet)
end

local function header(dq)
  return ffi.cast("const uint8_t*", C.dnsdist_ffi_dnsquestion_get_header(dq)),
    C.dnsdist_ffi_dnsquestion_get_len(dq)
end

local qname = ffi.new("const char*[1]")
local qlen = ffi.new("size_t[1]")

function cordon_query(dq)
  cordon.maybe_reload()
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, qname, qlen)
  local name = read_name(ffi.cast("const uint8_t*", qname[0]), tonumber(qlen[0]), 0)
  if name and cordon.listed(name) then
    local packet = blocked_answer(header(dq))
    if packet then
      replace(dq, packet)  -- now a response (QR set): dnsdist sends it back as it is
      return DNSAction.HeaderModify
    end
  end
  return DNSAction.None
end

function cordon_response(dr)
  local p, len = header(dr)
  if len < 12 then return DNSResponseAction.None end
  local qdcount = p[4] * 256 + p[5]
  local ancount = p[6] * 256 + p[7]
  local pos = 12
  for _ = 1, qdcount do
    pos = skip_name(p, len, pos)
    if not pos then return DNSResponseAction.None end
    pos = pos + 4
  end
  for _ = 1, ancount do
    local owner = pos
    pos = skip_name(p, len, pos)
    if not pos or pos + 10 > len then return DNSResponseAction.None end
    local rtype = p[pos] * 256 + p[pos + 1]
    local rdlen = p[pos + 8] * 256 + p[pos + 9]
    local rdata = pos + 10
    if rtype == TYPE_CNAME then
      local a, b = read_name(p, len, owner), read_name(p, len, rdata)
      if (a and cordon.listed(a)) or (b and cordon.listed(b)) then
        local packet = blocked_answer(p, len)
        if packet then
          C.dnsdist_ffi_dnsquestion_set_skip_cache(dr, true)
          replace(dr, packet)
        end
        return DNSResponseAction.None
      end
    end
    pos = rdata + rdlen
  end
  return DNSResponseAction.None
end

-- dnsdist calls maintenance() every second: look for a new index there too (queries also do).
function cordon_maintenance()
  cordon.maybe_reload()
end
if maintenance == nil then maintenance = cordon_maintenance end
