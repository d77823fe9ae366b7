import json

import pytest

from blocklist.errors import ArtefactError
from blocklist.notification import (
    MAX_NOTIFICATION_SIZE,
    DeltaRef,
    Notification,
    SnapshotRef,
    check_notification,
    open_notification,
    sign_notification,
)
from signing import (
    FreshnessError,
    PayloadType,
    RollbackError,
    SigningError,
    encode_bundle,
    generate_key,
    issue_certificate,
    public_key_raw,
    sign_envelope,
)

NOW = 1_790_000_000
ROOT = generate_key()
SIGNER = generate_key()
CERT = issue_certificate(ROOT, public_key_raw(SIGNER), "signing", NOW - 3600, NOW + 86400)
H = "ab" * 32


def notification(**overrides) -> Notification:
    fields = {
        "list_id": "national",
        "authority": "Test Authority",
        "edition": "hashed",
        "session": "0b7c6f5e-4a3d-4c2b-9a1f-0e1d2c3b4a59",
        "serial": 7,
        "created": NOW - 10,
        "expires": NOW + 3600,
        "state_checksum": H,
        "entry_count": 3,
        "snapshot": SnapshotRef(uri="hashed/snapshot-7.bin", size=100, sha256=H, serial=7),
        "deltas": [
            DeltaRef(uri="hashed/delta-5-6.bin", size=10, sha256=H, from_serial=5, to_serial=6),
            DeltaRef(uri="hashed/delta-6-7.bin", size=10, sha256=H, from_serial=6, to_serial=7),
        ],
    }
    fields.update(overrides)
    return Notification(**fields)


def signed(n: Notification | None = None, signer=SIGNER, certs=(CERT,)) -> bytes:
    return sign_notification(n or notification(), signer, list(certs))


def test_round_trip() -> None:
    n = notification()
    back = open_notification(signed(n), [public_key_raw(ROOT)], NOW)
    assert back == n
    assert [d.to_serial for d in back.deltas_from(5)] == [6, 7]
    assert back.deltas_from(6)[0].from_serial == 6
    assert back.deltas_from(4) is None
    check_notification(back, now=NOW, list_id="national", edition="hashed", current_serial=5)


def test_payload_is_compact_sorted_json() -> None:
    payload = notification().to_bytes()
    assert (
        payload == json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()
    )


def test_every_single_byte_change_is_rejected() -> None:
    data = signed()
    root = [public_key_raw(ROOT)]
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises((SigningError, ArtefactError)):
            open_notification(bytes(tampered), root, NOW)


def test_wrong_root_and_uncertified_key() -> None:
    with pytest.raises(SigningError) as info:
        open_notification(signed(), [public_key_raw(generate_key())], NOW)
    assert info.value.reason == "uncertified_key"
    rogue = generate_key()
    with pytest.raises(SigningError) as info:
        open_notification(signed(signer=rogue), [public_key_raw(ROOT)], NOW)
    assert info.value.reason == "unknown_key"
    self_certified = issue_certificate(rogue, public_key_raw(rogue), "signing", NOW - 1, NOW + 9)
    with pytest.raises(SigningError) as info:
        open_notification(signed(signer=rogue, certs=[self_certified]), [public_key_raw(ROOT)], NOW)
    assert info.value.reason == "uncertified_key"


def test_expired_signing_key() -> None:
    with pytest.raises(SigningError) as info:
        open_notification(signed(), [public_key_raw(ROOT)], NOW + 86400)
    assert info.value.reason == "expired"


def test_expired_notification_freezes() -> None:
    n = open_notification(signed(), [public_key_raw(ROOT)], NOW)
    with pytest.raises(FreshnessError, match="expired"):
        check_notification(
            n, now=NOW + 3600, list_id="national", edition="hashed", current_serial=5
        )


def test_lower_serial_is_rollback_and_equal_is_not() -> None:
    n = open_notification(signed(), [public_key_raw(ROOT)], NOW)
    with pytest.raises(RollbackError):
        check_notification(n, now=NOW, list_id="national", edition="hashed", current_serial=8)
    check_notification(n, now=NOW, list_id="national", edition="hashed", current_serial=7)


def test_wrong_list_or_edition() -> None:
    n = open_notification(signed(), [public_key_raw(ROOT)], NOW)
    with pytest.raises(ArtefactError) as info:
        check_notification(n, now=NOW, list_id="other", edition="hashed", current_serial=None)
    assert info.value.reason == "wrong_list"
    with pytest.raises(ArtefactError) as info:
        check_notification(n, now=NOW, list_id="national", edition="plain", current_serial=None)
    assert info.value.reason == "wrong_edition"


def _signed_payload(payload: bytes) -> bytes:
    return encode_bundle([CERT], sign_envelope(SIGNER, PayloadType.NOTIFICATION, payload))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(serial=-1), "serial"),
        (lambda d: d.update(serial="7"), "serial"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("snapshot"), "snapshot"),
        (lambda d: d.update(state_checksum="zz"), "state_checksum"),
        (lambda d: d.update(edition="secret"), "edition"),
        (lambda d: d.update(expires=d["created"]), "notification"),
        (lambda d: d["deltas"].pop(0) and d["deltas"].append(d["deltas"][0]), "notification"),
        (lambda d: d["snapshot"].update(uri="../../etc/passwd"), "snapshot.uri"),
        (lambda d: d["snapshot"].update(size=0), "snapshot.size"),
    ],
)
def test_malformed_signed_payload_is_refused_with_location(mutate, where: str) -> None:
    body = json.loads(notification().to_bytes())
    mutate(body)
    data = _signed_payload(json.dumps(body).encode())
    with pytest.raises(ArtefactError) as info:
        open_notification(data, [public_key_raw(ROOT)], NOW)
    assert info.value.reason == "malformed"
    assert where.split(".")[0] in str(info.value)


def test_not_json_and_oversized() -> None:
    with pytest.raises(ArtefactError):
        open_notification(_signed_payload(b"\xff not json"), [public_key_raw(ROOT)], NOW)
    huge = _signed_payload(b" " * MAX_NOTIFICATION_SIZE)
    with pytest.raises(SigningError) as info:
        open_notification(huge, [public_key_raw(ROOT)], NOW)
    assert info.value.reason == "oversized"


def test_delta_chain_must_end_at_serial() -> None:
    with pytest.raises(ValueError, match="ends at 6"):
        notification(deltas=[DeltaRef(uri="d", size=1, sha256=H, from_serial=5, to_serial=6)])


def test_snapshot_may_lag_when_deltas_lead_on() -> None:
    lagging = SnapshotRef(uri="hashed/snapshot-5.bin", size=100, sha256=H, serial=5)
    assert notification(snapshot=lagging).snapshot.serial == 5
    with pytest.raises(ValueError, match="no delta chain leads from the snapshot's serial 4"):
        notification(snapshot=SnapshotRef(uri="s", size=1, sha256=H, serial=4))
    with pytest.raises(ValueError, match="newer"):
        notification(snapshot=SnapshotRef(uri="s", size=1, sha256=H, serial=8))
