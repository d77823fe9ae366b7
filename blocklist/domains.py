"""Canonical form of domain entries.

A domain entry blocks the name and every name below it. Its canonical form is what gets hashed,
so two spellings of one name must give one string: UTS-46 mapping, A-labels, lowercase, no
trailing dot. Names that would block far more than one site (public suffixes, protected names,
IP addresses) are refused here, at the authority, with a reason a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import idna
from publicsuffixlist import PublicSuffixList

from blocklist.errors import InvalidEntry

MAX_NAME_LENGTH = 253  # RFC 1035 limit on the presentation form without the trailing dot
MAX_LABEL_LENGTH = 63
MAX_INPUT_LENGTH = 1024  # refuse absurd input before doing any Unicode work

# Underscore is not valid in IDNA but does appear in real host names (browsers resolve them).
_ASCII_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_NUMERIC_PART = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # The package ships its own copy of the list: no download at run time.
    return PublicSuffixList()


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def looks_like_ipv4(name: str) -> bool:
    """True when a resolver or browser would treat the name as an IPv4 address.

    inet_aton accepts 1 to 4 parts in decimal, octal or hex (`3279880203`, `0x7f.1`), and the
    WHATWG URL parser treats any host whose last label is numeric as an IPv4 literal.
    """
    parts = name.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts:
        return False
    return bool(_NUMERIC_PART.match(parts[-1]))


def _to_a_label(label: str, original: str) -> str:
    if label.isascii():
        if label.startswith("xn--"):
            try:
                # Round trip: a punycode label must decode to a valid U-label.
                u_label = idna.decode(label)
                return idna.alabel(u_label).decode("ascii")
            except idna.IDNAError as exc:
                raise InvalidEntry(
                    "invalid_characters", f"invalid punycode label {label!r} in {original!r}: {exc}"
                ) from exc
        if not _ASCII_LABEL.match(label):
            raise InvalidEntry(
                "invalid_characters",
                f"label {label!r} in {original!r} may contain only letters, digits, '-' and '_', "
                "and may not start or end with '-'",
            )
        return label
    try:
        return idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidEntry(
            "invalid_characters",
            f"label {label!r} in {original!r} is not a valid IDNA label: {exc}",
        ) from exc


def canonical_domain(raw: str) -> str:
    """Return the canonical A-label form of a domain, or raise InvalidEntry.

    Checks only the form of the name; `check_domain_policy` adds the list-wide refusals.
    """
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidEntry("too_long", f"domain input is {len(raw)} characters long (limit 253)")
    name = raw.strip()
    if not name:
        raise InvalidEntry("empty", "empty domain")
    if "[" in name or ":" in name:
        raise InvalidEntry("ip_literal", f"{_shorten(name)!r} is an IP address or has a port")
    try:
        name = idna.uts46_remap(name, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidEntry(
            "invalid_characters", f"{_shorten(name)!r} has characters not allowed in names: {exc}"
        ) from exc
    if name.startswith("*."):
        name = name[2:]
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidEntry("empty", f"{_shorten(raw)!r} names no domain")
    if looks_like_ipv4(name):
        raise InvalidEntry(
            "ip_literal", f"{_shorten(name)!r} is an IP address; IP entries are not allowed"
        )
    labels = name.split(".")
    if any(not label for label in labels):
        raise InvalidEntry("invalid_name", f"{_shorten(name)!r} has an empty label")
    a_labels = [_to_a_label(label, _shorten(raw)) for label in labels]
    for label in a_labels:
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidEntry(
                "too_long", f"label {_shorten(label, 20)!r} is {len(label)} bytes long (limit 63)"
            )
    result = ".".join(a_labels)
    if len(result) > MAX_NAME_LENGTH:
        raise InvalidEntry("too_long", f"domain is {len(result)} bytes long (limit 253)")
    return result


def is_public_suffix(name: str) -> bool:
    """True for names under which unrelated parties register names (`com`, `co.uk`, `github.io`).

    Uses both sections of the Public Suffix List: blocking a private suffix such as a hosting
    platform's shared domain would block every customer of that platform.
    """
    return bool(_psl().is_public(name))


class ProtectedNames:
    """Names that must never be blocked, nor any name above or below them.

    A listed ancestor would block the protected name (listing `example` blocks `www.example`);
    a listed descendant is content on a protected service, which calls for a takedown or a URL
    entry, not a DNS block of a major site's name.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names: frozenset[str] = frozenset(canonical_domain(n) for n in names)
        ancestors: set[str] = set()
        for n in self._names:
            parts = n.split(".")
            ancestors.update(".".join(parts[i:]) for i in range(1, len(parts)))
        self._ancestors = frozenset(ancestors)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self):
        return iter(sorted(self._names))

    def conflict(self, name: str) -> str | None:
        """The protected name that `name` (canonical) would block or lies under, if any."""
        parts = name.split(".")
        for i in range(len(parts)):
            suffix = ".".join(parts[i:])
            if suffix in self._names:
                return suffix
        if name in self._ancestors:
            return next(p for p in sorted(self._names) if p.endswith("." + name))
        return None


def validate_protected_names(names: list[str]) -> list[str]:
    """For config validators: a protected name must itself be a valid domain."""
    try:
        ProtectedNames(names)
    except InvalidEntry as exc:
        raise ValueError(str(exc)) from None
    return names


def check_domain_policy(name: str, protected: ProtectedNames | None = None) -> None:
    """Refuse a canonical domain that would block more than the site it names."""
    if is_public_suffix(name):
        raise InvalidEntry(
            "public_suffix",
            f"{name!r} is a public suffix (Public Suffix List): listing it would block every site "
            "registered under it; list the specific site instead",
        )
    if protected is not None:
        hit = protected.conflict(name)
        if hit is not None:
            relation = (
                "is" if hit == name else ("is under" if name.endswith("." + hit) else "is above")
            )
            raise InvalidEntry(
                "protected_name",
                f"{name!r} {relation} the protected name {hit!r}; it can never be blocked by name",
            )


def domain_entry(raw: str, protected: ProtectedNames | None = None) -> str:
    """Canonical form of a domain entry after every authority-side check."""
    name = canonical_domain(raw)
    check_domain_policy(name, protected)
    return name
