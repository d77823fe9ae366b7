"""Digests of canonical expressions, and the digests a DNS query name must be checked against.

The hashed edition carries only SHA-256 digests, so a leaked copy of the list does not name the
sites. A domain entry blocks every name below it, so a query name is checked by hashing each of
its suffixes: `a.b.example` -> `a.b.example`, `b.example`. The top-level label alone is never
hashed: a TLD is a public suffix and is refused at the authority.
"""

from __future__ import annotations

from hashlib import sha256

DIGEST_SIZE = 32


def digest(expression: str) -> bytes:
    """SHA-256 of a canonical expression (domain or URL expression), UTF-8 encoded."""
    return sha256(expression.encode("utf-8")).digest()


def name_suffix_digests(name: bytes) -> list[bytes]:
    """Digests of every suffix of a dotted, lowercase query name, longest first (TLD excluded).

    `name` is ASCII bytes without a trailing dot, e.g. b"www.blocked.example".
    """
    out = []
    start = 0
    end = name.rfind(b".")
    while 0 <= start <= end:
        out.append(sha256(name[start:]).digest())
        start = name.find(b".", start) + 1
    return out


def wire_name_to_dotted(wire: bytes) -> bytes:
    """Lowercase dotted form of an uncompressed wire-format name (b"\\x03www\\x07example\\x00").

    0x20-randomised case is folded here, so matching never depends on the client's casing.
    Raises ValueError when the labels do not add up to the buffer.
    """
    labels = []
    pos = 0
    size = len(wire)
    while pos < size:
        length = wire[pos]
        if length == 0:
            break
        if length > 63:
            raise ValueError("compressed or invalid label in question name")
        labels.append(wire[pos + 1 : pos + 1 + length])
        pos += 1 + length
    else:
        raise ValueError("question name is not terminated")
    if pos + 1 != size:
        raise ValueError("bytes after the question name")
    return b".".join(labels).lower()


def query_digests(qname: str | bytes) -> list[bytes]:
    """Digests to look up for a query name given as text or dotted bytes (any case, any dot)."""
    if isinstance(qname, str):
        qname = qname.encode("utf-8")
    qname = qname.lower()
    if qname.endswith(b"."):
        qname = qname[:-1]
    return name_suffix_digests(qname)
