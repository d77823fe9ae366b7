"""Audit heads from signed notifications: the anchors `audit verify` checks the log against.

A notification is verified against the pinned root key at the time it says it was signed (an
archived one may outlive its signing key's certificate); only then is its audit head trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from blocklist.authority.audit import Head
from blocklist.errors import ArtefactError
from blocklist.notification import open_notification
from signing import SigningError

_CREATED = re.compile(rb'"created":([0-9]{1,12})[,}]')


class AnchorError(Exception):
    """A notification that cannot serve as an anchor; the message says why."""


def head_from_notification(data: bytes, roots: Iterable[bytes], where: str = "") -> Head:
    roots = list(roots)
    found = _CREATED.search(data)
    if found is None:
        raise AnchorError(f"{where}: not a signed notification")
    created = int(found.group(1))
    try:
        note = open_notification(data, roots, created)
    except (SigningError, ArtefactError) as exc:
        raise AnchorError(f"{where}: {exc}") from None
    if note.created != created:
        raise AnchorError(f"{where}: not a signed notification")
    if note.audit_head is None:
        raise AnchorError(f"{where}: the notification carries no audit head")
    return Head(note.audit_head.records, note.audit_head.hash)


def parse_head(text: str) -> Head:
    """`RECORDS:HASH` as printed by `audit verify` and carried in notifications."""
    records, sep, digest = text.strip().partition(":")
    if not sep or not records.isascii() or not records.isdigit() or len(records) > 18:
        raise ValueError(f"{text[:80]!r} is not RECORDS:HASH")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{text[:80]!r}: the hash must be 64 lowercase hex digits")
    return Head(int(records), digest)
