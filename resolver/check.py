"""`resolver check NAME`: is a name blocked by the list in force, by which entry, or why not.

A pure function of the list in force (`ListInForce`), the protected names and the mode, so the
answer is exactly what the resolver does with a query for that name (the list decision only:
an upstream CNAME chain reaching a listed name is blocked too, which no offline check can know).
"""

from __future__ import annotations

from typing import Any

from blocklist.domains import canonical_domain
from blocklist.errors import InvalidEntry

MAX_NAME = 253
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.*")


class BadName(ValueError):
    pass


def normalize(text: str) -> bytes:
    """A query name as the resolver matches it: lowercase, dotted, A-labels, no final dot."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise BadName("empty name")
    try:
        return canonical_domain(text).encode()
    except InvalidEntry:
        pass
    # Names no list entry can take (an underscore label, one label) are still asked in DNS.
    if not text.isascii() or len(text) > MAX_NAME:
        raise BadName(f"{text[:80]!r} is not a DNS name") from None
    labels = text.lower().split(".")
    if any(not 0 < len(label) < 64 for label in labels):
        raise BadName(f"{text[:80]!r} has an empty label or one over 63 characters")
    if not _HOSTNAME_CHARS.issuperset(text.lower()):
        raise BadName(f"{text[:80]!r} holds characters no host name has")
    return ".".join(labels).encode()


def _suffixes(name: bytes) -> list[bytes]:
    labels = name.split(b".")
    return [b".".join(labels[i:]) for i in range(len(labels) - 1)]


def _under(name: bytes, parent: bytes) -> bool:
    return name == parent or name.endswith(b"." + parent)


def check_name(
    text: str, lists: Any, protected: list[str], mode: str = "enforce"
) -> dict[str, Any]:
    """The verdict for `text` under `lists` (a resolver.engine.ListInForce)."""
    name = normalize(text)
    out: dict[str, Any] = {
        "name": name.decode(),
        "serial": lists.serial,
        "mode": mode,
        "entry": None,
        "listed_as": None,
    }
    if not lists.loaded:
        out["verdict"] = "no_list"
        out["reason"] = "no verified list is in force: every name is forwarded"
        return out
    index = lists.index
    entry_id = index.match(name)
    if entry_id >= 0:
        # The listed suffix: the shortest one still matched by the same entry.
        listed_as = name
        for suffix in _suffixes(name):
            if index.match(suffix) == entry_id:
                listed_as = suffix
        out["entry"] = entry_id
        out["listed_as"] = listed_as.decode()
        exempt = lists.exemptions.exempts(name, entry_id)
        if exempt is not None:
            out["verdict"] = "exempted"
            out["exempted_by"] = exempt.decode()
            out["reason"] = (
                f"listed by entry {entry_id} (as {listed_as.decode()}) but exempted locally by "
                f"blocking.exempt_names {exempt.decode()!r}; reported to the authority"
            )
        elif mode == "log-only":
            out["verdict"] = "logged"
            out["reason"] = (
                f"listed by entry {entry_id}; log-only mode answers it as not listed and counts it"
            )
        else:
            out["verdict"] = "blocked"
            out["reason"] = f"listed by entry {entry_id} in serial {lists.serial}"
        return out
    out["verdict"] = "not_listed"
    for text_p in protected:
        p = canonical_domain(text_p).encode()
        if _under(name, p) or _under(p, name):
            out["protected_by"] = p.decode()
            out["reason"] = (
                f"not listed; {p.decode()} is a protected name (rails.protected_names): a list "
                "with an entry on it or on a name above it is held, not applied"
            )
            return out
    out["reason"] = f"no entry of serial {lists.serial} lists it or a name above it"
    return out
