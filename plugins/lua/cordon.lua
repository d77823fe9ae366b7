-- Cordon for LuaJIT resolvers (PowerDNS Recursor, dnsdist): enforce the hashed edition.
--
-- Reads the index file `resolver sync` writes next to state.bin (docs/protocol.md, "What a
-- plugin reads"): the file is mapped with mmap and checked (size, magic, version, trailing
-- SHA-256, fan-out total) before it replaces the list in force; a damaged file is refused and
-- the list in force kept. A query name is listed when the SHA-256 of one of its suffixes of two
-- labels or more is in the file. SHA-256 comes from OpenSSL's libcrypto, which both daemons
-- already load. Each Lua state (one per Recursor thread) maps the same file: the pages are
-- shared through the page cache.
--
-- Use: local cordon = dofile("/usr/share/cordon/lua/cordon.lua")
--      cordon.configure{ index = "/var/lib/cordon/index.bin", log = function(msg) ... end }
--      cordon.listed("www.example.test") -> true/false (lowercase, no trailing dot)

local ffi = require("ffi")
local bit = require("bit")

local function cdef(text)
  -- A declaration another script (or the daemon) made already is fine.
  pcall(ffi.cdef, text)
end
cdef("int open(const char *pathname, int flags);")
cdef("int close(int fd);")
cdef("long lseek(int fd, long offset, int whence);")
cdef("void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);")
cdef("int munmap(void *addr, size_t length);")
cdef("int memcmp(const void *s1, const void *s2, size_t n);")
cdef("unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);")
cdef("struct cordon_timespec { long tv_sec; long tv_nsec; };")
cdef("int clock_gettime(int clk_id, struct cordon_timespec *tp);")

local C = ffi.C
local crypto
do
  local ok = pcall(function() return C.SHA256 end)
  if ok then
    crypto = C
  else
    crypto = ffi.load("libcrypto.so.3")
  end
end

local MAGIC = "CDXI"
local VERSION = 1
local DIGEST = 32
local FANOUT = 64
local DIGESTS = FANOUT + 4 * 65536
local TRAILER = 32
local O_RDONLY, SEEK_END, PROT_READ, MAP_SHARED = 0, 2, 1, 1
local MAP_FAILED = ffi.cast("void *", -1)

local M = {
  settings = { index = "/var/lib/cordon/index.bin", reload_interval = 1 },
  current = nil,  -- { base = uint8_t*, size = n, count = n, serial = n, stamp = string }
  refused = nil,  -- stamp of a file already refused
  next_check = 0,
}

local function log(msg)
  local f = M.settings.log
  if f then f(msg) else io.stderr:write(msg .. "\n") end
end

local function be32(p, off)
  return ((p[off] * 256 + p[off + 1]) * 256 + p[off + 2]) * 256 + p[off + 3]
end

local function be64(p, off)
  -- Serials and counts stay far below 2^53; the high word is kept as a number.
  return be32(p, off) * 4294967296 + be32(p, off + 4)
end

-- What identifies one version of the file on disk. On x86-64 Linux: inode, mtime and size from
-- stat(2) (the layout of struct stat is fixed there). Elsewhere: size, header and integrity
-- trailer, which an atomic replacement changes whenever the content changes.
local statbuf
if ffi.arch == "x64" and ffi.os == "Linux" then
  cdef([[struct cordon_stat {
    unsigned long st_dev, st_ino, st_nlink; unsigned int st_mode, st_uid, st_gid; int pad0;
    unsigned long st_rdev; long st_size, st_blksize, st_blocks;
    long st_atime, st_atime_ns, st_mtime, st_mtime_ns, st_ctime, st_ctime_ns; long reserved[3];
  };]])
  cdef("int stat(const char *path, struct cordon_stat *buf);")
  if pcall(function() return C.stat end) then statbuf = ffi.new("struct cordon_stat") end
end

local function stamp(path)
  if statbuf then
    if C.stat(path, statbuf) ~= 0 then return nil end
    return string.format("%d:%d:%d:%d", tonumber(statbuf.st_ino), tonumber(statbuf.st_mtime),
      tonumber(statbuf.st_mtime_ns), tonumber(statbuf.st_size))
  end
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  local tail = ""
  if size and size >= TRAILER then
    f:seek("set", size - TRAILER)
    tail = f:read(TRAILER) or ""
  end
  f:seek("set", 0)
  local head = f:read(FANOUT) or ""
  f:close()
  return tostring(size) .. ":" .. head .. tail
end

-- Map and check the index at `path`; returns the index table or nil and the reason.
local function open_index(path, fingerprint)
  local fd = C.open(path, O_RDONLY)
  if fd < 0 then return nil, "cannot open " .. path end
  local size = tonumber(C.lseek(fd, 0, SEEK_END))
  if size < DIGESTS + TRAILER then
    C.close(fd)
    return nil, path .. ": " .. size .. " bytes is too short for an index"
  end
  local addr = C.mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
  C.close(fd)
  if addr == MAP_FAILED then return nil, "cannot map " .. path end
  local p = ffi.cast("const uint8_t *", addr)
  local function fail(reason)
    C.munmap(addr, size)
    return nil, path .. ": " .. reason
  end
  if ffi.string(p, 4) ~= MAGIC then return fail("not a Cordon index file") end
  local version = p[4] * 256 + p[5]
  local dsize = p[6] * 256 + p[7]
  if version ~= VERSION or dsize ~= DIGEST then
    return fail("unsupported index version " .. version .. "/" .. dsize)
  end
  local serial, count = be64(p, 8), be64(p, 16)
  if size ~= DIGESTS + DIGEST * count + TRAILER then
    return fail("size does not match its " .. count .. " entries")
  end
  local sum = ffi.new("unsigned char[32]")
  crypto.SHA256(p, size - TRAILER, sum)
  if C.memcmp(sum, p + size - TRAILER, TRAILER) ~= 0 then
    return fail("integrity check failed")
  end
  if be32(p, DIGESTS - 4) ~= count then
    return fail("fan-out table does not add up to " .. count)
  end
  local index = { addr = addr, base = p, size = size, count = count, serial = serial,
                  stamp = fingerprint }
  -- Unmapped when the table is collected (after the next list has replaced it).
  index.guard = ffi.gc(ffi.new("char[1]"), function() C.munmap(addr, size) end)
  return index
end

function M.reload()
  local path = M.settings.index
  local fp = stamp(path)
  if fp == nil then
    if M.current == nil and M.refused ~= "missing" then
      log("cordon: no index at " .. path .. " yet: nothing is blocked")
      M.refused = "missing"
    end
    return false
  end
  if (M.current and M.current.stamp == fp) or M.refused == fp then return false end
  local index, reason = open_index(path, fp)
  if not index then
    M.refused = fp
    log("cordon: refused a new index, keeping the list in force: " .. reason)
    return false
  end
  local replaced = M.current ~= nil or M.refused == "missing"
  M.current = index
  M.refused = nil
  log("cordon: list serial " .. index.serial .. " in force (" .. index.count .. " domains)")
  if replaced and M.settings.after_change then M.run_after_change() end
  return true
end

local ts = ffi.new("struct cordon_timespec")
local CLOCK_MONOTONIC = 1

function M.now()
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Look at the file at most once per reload_interval (call it from the query path or a timer).
local function quote(arg)
  return "'" .. arg:gsub("'", "'\\''") .. "'"
end

-- Start the configured command (e.g. a cache wipe) once a new list is in force. It runs in the
-- background: the daemon may need this very thread to carry the command out (the Recursor's
-- wipe-cache asks every worker thread), so waiting for it here would stall until a timeout.
function M.run_after_change()
  local command = M.settings.after_change
  if #command == 0 then return end
  local words = {}
  for i, arg in ipairs(command) do words[i] = quote(arg) end
  local line = table.concat(words, " ")
  local ok = os.execute("(" .. line .. " >/dev/null 2>&1 || echo \"cordon: after_change "
    .. command[1]:gsub("[^%w_./-]", "") .. " failed\" >&2) &")
  if ok ~= 0 and ok ~= true then
    log("cordon: after_change " .. command[1] .. " could not be started")
  end
end

function M.maybe_reload(now)
  now = now or M.now()
  if now >= M.next_check then
    M.next_check = now + M.settings.reload_interval
    M.reload()
  end
end

local digest = ffi.new("unsigned char[32]")

local function contains(index, d)
  local p = index.base
  local bucket = d[0] * 256 + d[1]
  local lo = 0
  if bucket > 0 then lo = be32(p, FANOUT + 4 * (bucket - 1)) end
  local hi = be32(p, FANOUT + 4 * bucket)
  while lo < hi do
    local mid = bit.rshift(lo + hi, 1)
    local c = C.memcmp(p + DIGESTS + mid * DIGEST, d, DIGEST)
    if c < 0 then
      lo = mid + 1
    elseif c == 0 then
      return true
    else
      hi = mid
    end
  end
  return false
end

-- Is `name` (lowercase, no trailing dot) or a parent domain listed? The protocol's rule:
-- SHA-256 of each suffix of two labels or more, longest first; never the top-level label.
function M.listed(name)
  local index = M.current
  if index == nil or index.count == 0 then return false end
  local len = #name
  local last = nil
  for i = len, 1, -1 do
    if name:byte(i) == 46 then last = i break end
  end
  if last == nil then return false end
  local start = 1
  while start <= last do
    local suffix = name:sub(start)
    crypto.SHA256(suffix, #suffix, digest)
    if contains(index, digest) then return true end
    local dot = name:find(".", start, true)
    if dot == nil then break end
    start = dot + 1
  end
  return false
end

function M.configure(settings)
  for k, v in pairs(settings) do M.settings[k] = v end
  if type(M.settings.index) ~= "string" then error("cordon: index: the index file's path") end
  M.reload()
  return M
end

return M
