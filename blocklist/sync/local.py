"""A verified list signed by throw-away keys, saved exactly as `resolver sync` saves one.

For demos, benchmarks and tests of the consumers of the list (resolver, RPZ feed, stop page),
which need a genuine signed state file without running an authority.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blocklist.artefacts import encode_snapshot
from blocklist.notification import Notification, SnapshotRef, sign_notification
from blocklist.state import Edition, ListState
from blocklist.sync import verified as persist
from blocklist.sync.verified import VerifiedList
from signing import format_public_key, generate_key, public_key_raw
from signing.trust import DocType, SetKey, keyset_payload, sign_document


@dataclass
class LocalSigner:
    root: Ed25519PrivateKey
    key: Ed25519PrivateKey
    chain: list[bytes]
    session: uuid.UUID = field(default_factory=uuid.uuid4)

    @classmethod
    def generate(cls, now: int, days: int = 30) -> LocalSigner:
        root, key = generate_key(), generate_key()
        window = SetKey(public_key_raw(key), "local", now - 3600, now + days * 86400)
        payload = keyset_payload(version=1, root_version=1, issued=now, keys=[window])
        return cls(root, key, [sign_document([root], DocType.KEY_SET, payload)])

    @property
    def root_public(self) -> bytes:
        return public_key_raw(self.root)

    @property
    def root_text(self) -> str:
        return format_public_key(self.root_public)

    def sign(
        self,
        state: ListState,
        *,
        serial: int,
        now: int,
        list_id: str = "national",
        edition: str = "hashed",
        authority: str = "Test Authority",
        lifetime: int = 7 * 86400,
    ) -> VerifiedList:
        if edition == "hashed":
            state = state.hashed()
        snapshot = encode_snapshot(state, list_id, Edition.parse(edition), self.session, serial, 0)
        note = Notification(
            list_id=list_id,
            authority=authority,
            edition=edition,
            session=str(self.session),
            serial=serial,
            created=now - 60,
            expires=now + lifetime,
            state_checksum=state.checksum.hex(),
            entry_count=len(state),
            snapshot=SnapshotRef(
                uri=f"snapshot-{self.session}-{serial}.bin",
                size=len(snapshot),
                sha256=hashlib.sha256(snapshot).hexdigest(),
                serial=serial,
            ),
        )
        data = sign_notification(note, self.key, self.chain)
        return VerifiedList(state, note, data, now, serial)

    def save(self, state_dir: Path, state: ListState, **options) -> VerifiedList:
        """Sign `state` and write it to `state_dir` as the sync follower would."""
        verified = self.sign(state, **options)
        persist.save(state_dir, verified)
        return verified
