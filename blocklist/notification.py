"""The signed notification: the small file every ASP polls.

It names the current serial, the state checksum, and the snapshot and deltas (each with size
and SHA-256) that lead to it. On the wire it is a signing bundle (certificate chain + envelope
of type NOTIFICATION) whose payload is compact JSON; the signature is verified over the exact
bytes before the JSON is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from blocklist.errors import ArtefactError
from signing import (
    PayloadType,
    SigningError,
    TrustedKeys,
    check_fresh,
    check_not_rollback,
    encode_bundle,
    open_bundle,
    sign_envelope,
)
from signing.trust import TrustFloor

MAX_NOTIFICATION_SIZE = 256 * 1024
MAX_DELTAS = 1024
MAX_FILE_SIZE = 2**40

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Serial = Annotated[int, Field(ge=1, lt=2**63)]
Timestamp = Annotated[int, Field(ge=0, lt=2**40)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FileRef(_Strict):
    uri: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9._/-]+$")]
    size: Annotated[int, Field(ge=1, le=MAX_FILE_SIZE)]
    sha256: Hex32

    @field_validator("uri")
    @classmethod
    def _relative(cls, uri: str) -> str:
        # Clients join the URI to the notification's URL or a local directory: no escaping it.
        if uri.startswith("/") or any(part in ("", ".", "..") for part in uri.split("/")):
            raise ValueError("must be a relative path without empty, '.' or '..' segments")
        return uri


class SnapshotRef(FileRef):
    # May lag the notification's serial: an authority can publish a delta at once and write the
    # new snapshot afterwards; a client then applies the deltas from the snapshot's serial.
    serial: Serial


class DeltaRef(FileRef):
    from_serial: Annotated[int, Field(ge=0, lt=2**63)]
    to_serial: Serial


class AuditHead(_Strict):
    """The authority's audit log when the notification was signed: its record count and the
    hash of its last record. Every ASP keeps signed copies, so a rewrite of the history before
    a published head is detectable (see docs/security.md)."""

    records: Annotated[int, Field(ge=0, lt=2**63)]
    hash: Hex32


class Notification(_Strict):
    v: Literal[1] = 1
    type: Literal["cordon-notification"] = "cordon-notification"
    list_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    authority: Annotated[str, Field(max_length=200)] = ""
    edition: Literal["hashed", "plain"]
    session: Annotated[
        str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    ]
    serial: Serial
    created: Timestamp
    expires: Timestamp
    state_checksum: Hex32
    entry_count: Annotated[int, Field(ge=0, lt=2**32)]
    snapshot: SnapshotRef
    deltas: Annotated[list[DeltaRef], Field(max_length=MAX_DELTAS)] = []
    min_poll_interval: Annotated[int, Field(ge=1, le=86400)] = 60
    # Set by the authority for a deliberate bulk change, so ASP growth/shrink rails let it pass.
    bulk_change: bool = False
    audit_head: AuditHead | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Notification:
        if self.expires <= self.created:
            raise ValueError("expires must be after created")
        prev_to: int | None = None
        for d in self.deltas:
            if d.to_serial <= d.from_serial:
                raise ValueError(f"delta {d.from_serial}->{d.to_serial} does not go forward")
            if prev_to is not None and d.from_serial != prev_to:
                raise ValueError("deltas do not form a contiguous chain")
            prev_to = d.to_serial
        if prev_to is not None and prev_to != self.serial:
            raise ValueError(f"the delta chain ends at {prev_to}, not at serial {self.serial}")
        if self.snapshot.serial > self.serial:
            raise ValueError("the snapshot is newer than the notification")
        if self.snapshot.serial < self.serial and self.deltas_from(self.snapshot.serial) is None:
            raise ValueError(
                f"no delta chain leads from the snapshot's serial {self.snapshot.serial}"
            )
        return self

    def to_bytes(self) -> bytes:
        data = self.model_dump(mode="json")
        if data.get("audit_head") is None:
            del data["audit_head"]  # absent, not null: older notifications keep their bytes
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def deltas_from(self, serial: int) -> list[DeltaRef] | None:
        """The deltas that lead from `serial` to this notification's serial, or None if none do."""
        for i, d in enumerate(self.deltas):
            if d.from_serial == serial:
                return list(self.deltas[i:])
        return None


def sign_notification(
    notification: Notification, signing_key, certificates: Sequence[bytes]
) -> bytes:
    """The notification file: the certificate chain plus the signed payload, as one bundle."""
    envelope = sign_envelope(signing_key, PayloadType.NOTIFICATION, notification.to_bytes())
    return encode_bundle(list(certificates), envelope)


def open_notification(
    data: bytes,
    pinned_roots: Iterable[bytes],
    now: int,
    max_size: int = MAX_NOTIFICATION_SIZE,
) -> Notification:
    """Verify chain and signature over the exact bytes, then parse. Freshness is not checked here:
    the caller decides what an expired notification means (freeze and alarm)."""
    return open_trusted_notification(data, pinned_roots, now, max_size)[0]


def open_trusted_notification(
    data: bytes,
    pinned_roots: Iterable[bytes],
    now: int | None,
    max_size: int = MAX_NOTIFICATION_SIZE,
    *,
    threshold: int = 1,
    floor: TrustFloor | None = None,
) -> tuple[Notification, TrustedKeys]:
    """`open_notification` that also returns what vouched for the signer (key-set version,
    revocations, recovery session). `now` None checks the signer's window at the
    notification's own signed `created` time (a stored file whose verification time is not
    signed)."""
    trusted, envelope = open_bundle(
        data,
        pinned_roots,
        PayloadType.NOTIFICATION,
        now,
        max_size,
        threshold=threshold,
        floor=floor,
    )
    try:
        note = Notification.model_validate_json(envelope.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "notification"
        raise ArtefactError(
            "malformed", f"signed notification is malformed at {where}: {first['msg']}"
        ) from None
    if now is None:
        trusted.check_signer_at(envelope.key_id, note.created)
    return note, trusted


def check_notification(
    notification: Notification,
    *,
    now: int,
    list_id: str,
    edition: str,
    current_serial: int | None,
) -> None:
    """The checks an ASP runs on a verified notification before acting on it.

    Raises ArtefactError for the wrong list or edition, and the signing package's
    FreshnessError or RollbackError for an expired or older notification.
    """
    if notification.list_id != list_id:
        raise ArtefactError(
            "wrong_list", f"notification is for list {notification.list_id!r}, not {list_id!r}"
        )
    if notification.edition != edition:
        raise ArtefactError(
            "wrong_edition",
            f"notification is for the {notification.edition} edition, not {edition}",
        )
    check_fresh(notification.expires, now)
    check_not_rollback(current_serial, notification.serial)


__all__ = [
    "MAX_NOTIFICATION_SIZE",
    "AuditHead",
    "DeltaRef",
    "FileRef",
    "Notification",
    "SigningError",
    "SnapshotRef",
    "check_notification",
    "open_notification",
    "open_trusted_notification",
    "sign_notification",
]
