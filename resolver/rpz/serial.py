"""SOA serial numbers: the list serial mapped to 32 bits, compared with RFC 1982 arithmetic."""

from __future__ import annotations

SERIAL_BITS = 32
_MOD = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)


def zone_serial(list_serial: int) -> int:
    """The SOA serial for a list serial (the protocol's serial is a u64; SOA's is a u32)."""
    return list_serial % _MOD


def compare(a: int, b: int) -> int | None:
    """-1, 0 or 1 as `a` is before, equal to or after `b` (RFC 1982 §3.2); None when the
    comparison is undefined (the two are exactly 2**31 apart)."""
    a %= _MOD
    b %= _MOD
    if a == b:
        return 0
    if (a < b and b - a < _HALF) or (a > b and a - b > _HALF):
        return -1
    if (a < b and b - a > _HALF) or (a > b and a - b < _HALF):
        return 1
    return None


def newer(a: int, b: int) -> bool:
    """True when serial `a` is after `b` in sequence space."""
    return compare(a, b) == 1


def add(serial: int, n: int) -> int:
    """RFC 1982 §3.1 addition; n must be in [0, 2**31 - 1]."""
    if not 0 <= n < _HALF:
        raise ValueError("RFC 1982 addition needs 0 <= n <= 2**31 - 1")
    return (serial + n) % _MOD
