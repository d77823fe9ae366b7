"""Cordon for Unbound's python module: enforce the hashed edition inside Unbound.

Install with `module-config: "python validator iterator"` and `python-script: .../cordon.py`.
Settings come from a TOML file named by $CORDON_UNBOUND_CONFIG (default
/etc/unbound/cordon.toml); the list comes from the index file `resolver sync` writes next to
`state.bin` (docs/protocol.md, "What a plugin reads"). This file needs only Python's standard
library: it runs inside Unbound's interpreter, not in Cordon's environment.

Behaviour (design §6): a listed name or any name below a listed domain gets A -> stop IPv4,
AAAA -> stop IPv6, every other type NODATA with a SOA owned by the question name, and EDE 16
(Censored) for EDNS clients. An answer whose CNAME chain reaches a listed name is answered the
same way. Blocked answers are never cached, so a delisted name is freed at once.

Unbound answers from its message cache without calling any module, so a name cached before it
was listed needs one of two things (docs/plugins.md): either `after_change` runs a cache flush
(`unbound-control flush_zone .`) each time a new list is taken, and cache hits cost nothing
more; or, with `cache_horizon` seconds (default 3), every message this module lets into the
cache expires from it within that time (its records stay in the RRset cache with their own
TTLs, so a re-check costs no upstream query, but every cached name comes back through this
module once per horizon). A thread of the module looks for a new index every
`reload_interval` seconds; a damaged one is refused and the list in force is kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import mmap
import os
import struct
import subprocess
import threading
import time
import tomllib

# ------------------------------------------------------------------ the index (no Unbound here)

MAGIC = b"CDXI"
VERSION = 1
DIGEST_SIZE = 32
HEADER = struct.Struct(">4sHHQQQ32s")
FANOUT_OFFSET = HEADER.size
DIGESTS_OFFSET = FANOUT_OFFSET + 4 * 65536
TRAILER_SIZE = 32
_U32 = struct.Struct(">I").unpack_from
_U16 = struct.Struct(">H").unpack_from


class IndexError_(Exception):
    """The index file cannot be used (the message names the file and the problem)."""


class Index:
    """A verified, memory-mapped index file. Lookups read the mapping; nothing is copied."""

    __slots__ = ("_map", "count", "path", "serial", "stamp", "verified_at")

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                self.stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                if st.st_size < DIGESTS_OFFSET + TRAILER_SIZE:
                    raise IndexError_(f"{path}: {st.st_size} bytes is too short for an index")
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise IndexError_(f"cannot read {path}: {exc}") from None
        try:
            magic, version, size, serial, count, verified_at, _ = HEADER.unpack_from(m)
            if magic != MAGIC:
                raise IndexError_(f"{path} is not a Cordon index file")
            if version != VERSION or size != DIGEST_SIZE:
                raise IndexError_(f"{path}: unsupported index version {version}/{size}")
            if len(m) != DIGESTS_OFFSET + DIGEST_SIZE * count + TRAILER_SIZE:
                raise IndexError_(f"{path}: size does not match its {count} entries")
            if hashlib.sha256(memoryview(m)[:-TRAILER_SIZE]).digest() != m[-TRAILER_SIZE:]:
                raise IndexError_(f"{path}: integrity check failed")
            if _U32(m, DIGESTS_OFFSET - 4)[0] != count:
                raise IndexError_(f"{path}: fan-out table does not add up to {count}")
        except BaseException:
            m.close()
            raise
        self._map = m
        self.serial = serial
        self.count = count
        self.verified_at = verified_at

    def __contains__(self, digest: bytes) -> bool:
        m = self._map
        p = _U16(digest)[0]
        hi = _U32(m, FANOUT_OFFSET + 4 * p)[0]
        lo = _U32(m, FANOUT_OFFSET + 4 * p - 4)[0] if p else 0
        while lo < hi:
            mid = (lo + hi) >> 1
            off = DIGESTS_OFFSET + mid * DIGEST_SIZE
            probe = m[off : off + DIGEST_SIZE]
            if probe < digest:
                lo = mid + 1
            elif probe == digest:
                return True
            else:
                hi = mid
        return False

    def listed(self, name: bytes) -> bool:
        """Is the lowercase dotted `name` (no trailing dot) or a parent domain listed?

        The protocol's hashing rule: SHA-256 of each suffix of two labels or more, longest
        first; the top-level label alone is never hashed.
        """
        if not self.count:
            return False
        start = 0
        end = name.rfind(b".")
        while 0 <= start <= end:
            if hashlib.sha256(name[start:]).digest() in self:
                return True
            start = name.find(b".", start) + 1
        return False


def wire_to_dotted(wire: bytes) -> bytes:
    """Lowercase dotted form of an uncompressed wire name; b"" for the root or a bad name."""
    labels = []
    pos = 0
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            break
        if length > 63:
            return b""
        labels.append(wire[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return b".".join(labels).lower()


# ------------------------------------------------------------------ settings


class SettingsError(Exception):
    pass


class Settings:
    def __init__(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: {exc}") from None
        known = {
            "index",
            "ipv4",
            "ipv6",
            "ttl",
            "cache_horizon",
            "reload_interval",
            "ede_text",
            "after_change",
        }
        for key in data:
            if key not in known:
                raise SettingsError(f"{path}: unknown setting {key!r}")
        if not isinstance(data.get("index"), str):
            raise SettingsError(f"{path}: index: give the path of the index file (a string)")
        self.index: str = data["index"]
        self.ipv4 = self._addresses(path, data, "ipv4", 4)
        self.ipv6 = self._addresses(path, data, "ipv6", 6)
        self.ttl = self._number(path, data, "ttl", 60, 0, 86400)
        self.cache_horizon = self._number(path, data, "cache_horizon", 3, 0, 3600)
        command = data.get("after_change", [])
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            raise SettingsError(f"{path}: after_change: a command as a list of strings")
        self.after_change: list[str] = command
        self.reload_interval = float(self._number(path, data, "reload_interval", 0.5, 0.05, 3600))
        text = data.get("ede_text", "blocked by the national list")
        if not isinstance(text, str) or len(text.encode()) > 255:
            raise SettingsError(f"{path}: ede_text: a string of at most 255 bytes")
        self.ede_text = text.encode()

    @staticmethod
    def _addresses(path: str, data: dict, key: str, version: int) -> list[str]:
        value = data.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise SettingsError(f"{path}: {key}: a list of IPv{version} addresses")
        out = []
        for item in value:
            try:
                addr = ipaddress.ip_address(item)
            except (TypeError, ValueError):
                raise SettingsError(f"{path}: {key}: {item!r} is not an address") from None
            if addr.version != version:
                raise SettingsError(f"{path}: {key}: {item} is not an IPv{version} address")
            out.append(str(addr))
        return out

    @staticmethod
    def _number(path: str, data: dict, key: str, default: int, low: int, high: int) -> int:
        value = data.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SettingsError(f"{path}: {key}: a number")
        if not low <= value <= high:
            raise SettingsError(f"{path}: {key}: {value} is not within {low}..{high}")
        return value


class Enforcer:
    """The list in force and its reloading; shared by every Unbound thread (under the GIL)."""

    def __init__(self, settings: Settings, log=print) -> None:
        self.settings = settings
        self.log = log
        self.index: Index | None = None
        self.refused: tuple | None = None  # stamp of a file already refused
        self.next_check = 0.0
        self._watcher: threading.Thread | None = None
        self.reload()

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.settings.index)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Take the index file if it changed; True when a new list is in force."""
        stamp = self._stamp()
        if stamp is None:
            if self.index is None and self.refused != "missing":
                self.log(f"cordon: no index at {self.settings.index} yet: nothing is blocked")
                self.refused = "missing"
            return False
        if (self.index is not None and stamp == self.index.stamp) or stamp == self.refused:
            return False
        try:
            index = Index(self.settings.index)
        except IndexError_ as exc:
            self.refused = stamp
            self.log(f"cordon: refused a new index, keeping the list in force: {exc}")
            return False
        replaced = self.index is not None or self.refused == "missing"
        self.index = index
        self.refused = None
        self.log(f"cordon: list serial {index.serial} in force ({index.count} domains)")
        if replaced and self.settings.after_change:
            self.run_after_change()
        return True

    def run_after_change(self) -> None:
        """Run the configured command (e.g. a cache flush) once a new list is in force."""
        command = self.settings.after_change
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log(f"cordon: after_change {command[0]} failed: {exc}")
            return
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[:200]
            self.log(f"cordon: after_change {command[0]} exited {done.returncode}: {detail}")

    def maybe_reload(self) -> None:
        """Inline fallback when no watcher thread runs: look at most once per interval."""
        if self._watcher is not None:
            return
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + self.settings.reload_interval
            self.reload()

    def watch(self) -> None:
        """Reload from a thread of our own: Unbound has no timers for modules, and the check
        (and a reload's hashing, which releases the GIL) then never delays a query."""
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(self.settings.reload_interval):
                try:
                    self.reload()
                except Exception as exc:  # never let the watcher die silently
                    self.log(f"cordon: reload failed, keeping the list in force: {exc}")

        self._watcher = threading.Thread(target=run, name="cordon-index", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._stop.set()
            self._watcher.join(5)
            self._watcher = None

    def listed(self, name: bytes) -> bool:
        index = self.index
        return index is not None and index.listed(name)


# ------------------------------------------------------------------ Unbound's module interface
# The names below (log_info, DNSMessage, MODULE_*, ...) are provided by Unbound's interpreter.

ENFORCER: Enforcer | None = None
RR_TYPE_CNAME_ = 5
EDE_OPTION = 15
EDE_CENSORED = 16
EDE_FORGED = 4


def init_standard(id, env):
    global ENFORCER
    path = os.environ.get("CORDON_UNBOUND_CONFIG", "/etc/unbound/cordon.toml")
    try:
        ENFORCER = Enforcer(Settings(path), log_info)  # noqa: F821
    except SettingsError as exc:
        log_err(f"cordon: {exc}")  # noqa: F821
        raise
    ENFORCER.watch()
    return True


def deinit(id):
    if ENFORCER is not None:
        ENFORCER.close()
    return True


def inform_super(id, qstate, superqstate, qdata):
    return True


def _chain_names(rep) -> list[bytes]:
    """Owner names and CNAME targets of the answer section, lowercase dotted."""
    names = []
    for i in range(rep.an_numrrsets):
        rrset = rep.rrsets[i]
        names.append(wire_to_dotted(rrset.rk.dname))
        if rrset.rk.type == RR_TYPE_CNAME_:
            data = rrset.entry.data
            for j in range(data.count):
                rdata = data.rr_data[j]
                names.append(wire_to_dotted(rdata[2:]))  # after the 2-byte rdlength
    return names


def _answer_blocked(id, qstate) -> bool:
    s = ENFORCER.settings
    qname = qstate.qinfo.qname_str
    qtype = qstate.qinfo.qtype
    msg = DNSMessage(qname, qtype, RR_CLASS_IN, PKT_QR | PKT_RA)  # noqa: F821
    forged = False
    if qtype == RR_TYPE_A and s.ipv4:  # noqa: F821
        msg.answer.extend(f"{qname} {s.ttl} IN A {a}" for a in s.ipv4)
        forged = True
    elif qtype == RR_TYPE_AAAA and s.ipv6:  # noqa: F821
        msg.answer.extend(f"{qname} {s.ttl} IN AAAA {a}" for a in s.ipv6)
        forged = True
    else:
        msg.authority.append(
            f"{qname} {s.ttl} IN SOA stop.cordon.invalid. hostmaster.cordon.invalid. "
            f"1 3600 600 86400 {s.ttl}"
        )
    if not msg.set_return_msg(qstate):
        return False
    qstate.return_msg.rep.security = 2  # insecure: nothing downstream should validate it
    qstate.return_rcode = RCODE_NOERROR  # noqa: F821
    codes = [EDE_CENSORED] + ([EDE_FORGED] if forged else [])
    for code in codes:
        text = s.ede_text if code == EDE_CENSORED else b""
        edns_opt_list_append(  # noqa: F821
            qstate.edns_opts_front_out,
            EDE_OPTION,
            bytearray(struct.pack("!H", code) + text),
            qstate.region,
        )
    return True


def operate(id, event, qstate, qdata):
    enforcer = ENFORCER
    if event in (MODULE_EVENT_NEW, MODULE_EVENT_PASS):  # noqa: F821
        enforcer.maybe_reload()
        if enforcer.listed(wire_to_dotted(qstate.qinfo.qname)):
            # A message cached before the name was listed must not be served again (with
            # serve-expired it would be, stale, for as long as serve-expired-ttl allows).
            invalidateQueryInCache(qstate, qstate.qinfo)  # noqa: F821
            ok = _answer_blocked(id, qstate)
            qstate.ext_state[id] = MODULE_FINISHED if ok else MODULE_ERROR  # noqa: F821
            return True
        qstate.ext_state[id] = MODULE_WAIT_MODULE  # noqa: F821
        return True
    if event == MODULE_EVENT_MODDONE:  # noqa: F821
        msg = qstate.return_msg
        rep = msg.rep if msg is not None else None
        if rep is not None:
            # A lone non-CNAME RRset is owned by the question name, checked at MODULE_EVENT_NEW.
            n = rep.an_numrrsets
            chained = n > 1 or (n == 1 and rep.rrsets[0].rk.type == RR_TYPE_CNAME_)
            if chained and any(enforcer.listed(name) for name in _chain_names(rep)):
                # Below us the iterator cached the chain: drop it so the next query comes back.
                invalidateQueryInCache(qstate, qstate.qinfo)  # noqa: F821
                ok = _answer_blocked(id, qstate)
                qstate.ext_state[id] = MODULE_FINISHED if ok else MODULE_ERROR  # noqa: F821
                return True
            horizon = enforcer.settings.cache_horizon
            if horizon and rep.ttl > horizon:
                # Re-store the message with a short life: a cache hit never reaches this module.
                rep.ttl = horizon
                rep.prefetch_ttl = min(rep.prefetch_ttl, horizon)
                storeQueryInCache(qstate, qstate.qinfo, rep, 0)  # noqa: F821
        qstate.ext_state[id] = MODULE_FINISHED  # noqa: F821
        return True
    qstate.ext_state[id] = MODULE_ERROR  # noqa: F821
    return True
