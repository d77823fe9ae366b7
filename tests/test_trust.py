"""List trust under attack: a stolen or renewed signing key, revocation, k-of-n roots, root
rotation, a damaged state file with a replay, hostile mirrors, and churn.

Each attack runs against the real authority API and key directory, a real follower and real
HTTP on loopback; the attacker holds exactly what the scenario says it stole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from authority_fixtures import RunningAuthority, start_authority
from test_sync import (
    StaticHost,
    add_and_approve,
    base_url,
    delist,
    mirror,
    publish,
    resign,
    static_follower,
    sync_config,
)

from blocklist.artefacts import encode_snapshot
from blocklist.authority import keyring
from blocklist.errors import ArtefactError
from blocklist.notification import Notification, SnapshotRef, open_notification, sign_notification
from blocklist.state import Edition, ListState
from blocklist.sync import replay as replay_file
from blocklist.sync import verified as persist
from blocklist.sync.engine import Result
from blocklist.sync.follower import STATUS_FILE, Follower
from blocklist.sync.http import FetchError
from signing import (
    HEADER_SIZE,
    SIGNATURE_SIZE,
    CertificateError,
    RollbackError,
    SigningError,
    decode_bundle,
    format_public_key,
    key_id,
    load_private_key,
    parse_public_key,
    public_key_raw,
)
from signing.trust import DocType, SetKey, keyset_payload, sign_document


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


@pytest.fixture
async def host():
    h = StaticHost()
    await h.server.start_server()
    yield h
    await h.server.close()


def keys_dir(api: RunningAuthority) -> Path:
    return api.authority.config.keys_dir


def now() -> int:
    return int(time.time())


async def synced(api, host, tmp_path, **extra) -> Follower:
    await publish(api, "one.example", "two.example")
    mirror(api, host)
    f = static_follower(api, host, tmp_path, **extra)
    await f.load()
    assert (await f.poll_once()).result is Result.APPLIED
    return f


def forged(
    note: Notification, state: ListState, serial: int, key, chain, session: str | None = None
) -> tuple[bytes, str, bytes]:
    """A complete publication for `serial` signed by `key`: notification, snapshot name, bytes."""
    session = session or note.session
    snap = encode_snapshot(state, note.list_id, Edition.HASHED, uuid.UUID(session), serial, 0)
    name = f"snapshot-{session}-{serial}.bin"
    ref = SnapshotRef(
        uri=name, size=len(snap), sha256=hashlib.sha256(snap).hexdigest(), serial=serial
    )
    fake = note.model_copy(
        update={
            "serial": serial,
            "session": session,
            "snapshot": ref,
            "deltas": [],
            "state_checksum": state.checksum.hex(),
            "entry_count": len(state),
            "created": now() - 5,
            "expires": now() + 86400,
        }
    )
    return sign_notification(fake, key, chain), name, snap


def payload_note(bundle: bytes) -> Notification:
    """The notification inside a bundle, read without verifying (the attacker's view)."""
    signed = decode_bundle(bundle, len(bundle))[1]
    return Notification.model_validate_json(signed[HEADER_SIZE:-SIGNATURE_SIZE])


def key_set_for(key, roots, *, version: int, root_version: int = 1) -> bytes:
    """A key set naming only `key`, signed by `roots` (what a holder of those roots can make)."""
    window = SetKey(public_key_raw(key), "x", now() - 9, now() + 999)
    payload = keyset_payload(
        version=version, root_version=root_version, issued=now(), keys=[window]
    )
    return sign_document(list(roots), DocType.KEY_SET, payload)


async def renew(api: RunningAuthority) -> None:
    keyring.new_signing_key(keys_dir(api), keys_dir(api) / "root.key", now())
    assert api.authority.reload_signer_if_renewed()


# ---------------------------------------------------------------- renewal and revocation


async def test_old_key_after_renewal_refused_once_new_key_set_seen(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        old = api.authority.signer
        old_note = open_notification(host.files["notification.bin"], [api.root], now())
        await renew(api)
        await publish(api, "three.example")
        mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED
        assert f.replay.keyset_version == 2
        # The old key with its own (older) key set: that key set is superseded.
        later = old_note.model_copy(update={"expires": old_note.expires + 60})
        host.files["notification.bin"] = sign_notification(later, old.key, old.chain)
        with pytest.raises(CertificateError) as info:
            await f.poll_once()
        assert info.value.reason == "superseded"
        # The old key presenting the new key set: it is not in it.
        new_chain = api.authority.signer.chain
        host.files["notification.bin"] = sign_notification(later, old.key, new_chain)
        with pytest.raises(CertificateError) as info:
            await f.poll_once()
        assert info.value.reason == "uncertified_key"
        assert f.current.serial == 2
        assert f.last_error["kind"] == "uncertified_key"
        # Restart: the replay file still knows key set 2.
        await f.close()
        f = static_follower(api, host, tmp_path)
        await f.load()
        host.files["notification.bin"] = sign_notification(later, old.key, old.chain)
        with pytest.raises(CertificateError):
            await f.poll_once()
    finally:
        await f.close()


async def test_revoked_key_refused_live_and_in_a_stored_file(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        stolen = api.authority.signer
        stolen_id = key_id(public_key_raw(stolen.key)).hex()
        revocation = keyring.revoke(keys_dir(api), [keys_dir(api) / "root.key"], [stolen_id], now())
        assert revocation.revoked == [stolen_id] and revocation.recover_session is None
        assert api.authority.reload_signer_if_renewed()
        await publish(api, "three.example")
        good = mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED
        assert stolen_id in f.replay.revoked
        # The thief signs with the revoked key and presents the newest key set.
        fake, name, snap = forged(good, f.current.state, 3, stolen.key, api.authority.signer.chain)
        host.files.update({"notification.bin": fake, name: snap})
        with pytest.raises(CertificateError) as info:
            await f.poll_once()
        assert info.value.reason == "revoked" and "suspicious" in f.alarms
        # ... or writes a state file signed by it while the follower is down, with the key set
        # that still listed the key (only the replay file knows it was revoked since).
        await f.close()
        state = f.current.state
        for chain in (api.authority.signer.chain, stolen.chain):
            fake, _, _ = forged(good, state, 3, stolen.key, chain)
            signed = persist.VerifiedList(state, payload_note(fake), fake, now(), 3)
            persist.save(tmp_path / "sync-state", signed)
            f = static_follower(api, host, tmp_path)
            assert await f.load() is None
            assert f.last_error["kind"] == "state_file" and "revoked" in f.last_error["message"]
            await f.close()
    finally:
        await f.close()


# ---------------------------------------------------------------- stolen key, serial poisoning


async def test_stolen_key_max_serial_then_root_signed_recovery(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path, max_serial_jump=1000)
    try:
        thief = api.authority.signer
        note = open_notification(host.files["notification.bin"], [api.root], now())
        state = f.current.state
        # Serial 2**63-1 in one step: refused, the list stays.
        fake, name, snap = forged(note, state, 2**63 - 1, thief.key, thief.chain)
        host.files.update({"notification.bin": fake, name: snap})
        with pytest.raises(ArtefactError) as info:
            await f.poll_once()
        assert info.value.reason == "serial_jump" and f.current.serial == 1
        assert "suspicious" in f.alarms  # an attack indicator, not a stale mirror
        # Within the bound the thief still poisons the serial: the genuine serial 2 is refused.
        fake, name, snap = forged(note, state, 1001, thief.key, thief.chain)
        host.files.update({"notification.bin": fake, name: snap})
        assert (await f.poll_once()).result is Result.APPLIED and f.current.serial == 1001
        # The thief's list went in, but the alarm stays until the authority's keys change.
        assert "suspicious" in f.alarms and "serial_jump" in f.alarms["suspicious"]
        await publish(api, "three.example")
        mirror(api, host)
        with pytest.raises(RollbackError):
            await f.poll_once()
        # The root revokes the stolen key and names a recovery session; the authority takes it.
        stolen = key_id(public_key_raw(thief.key)).hex()
        rev = keyring.revoke(
            keys_dir(api), [keys_dir(api) / "root.key"], [stolen], now(), recover=True
        )
        assert api.authority.reload_signer_if_renewed()
        recovered = mirror(api, host)
        assert recovered.session == rev.recover_session and recovered.serial == 3
        # The ASP follows with nothing deleted by anyone.
        assert (await f.poll_once()).result is Result.APPLIED
        assert f.current.serial == 3 and f.current.notification.session == rev.recover_session
        assert f.replay.recovered_by == rev.signer.verify(now()).keyset_version
        assert "suspicious" not in f.alarms  # cleared by the list under the new key set
        # And keeps following; the thief's next serials in the old session are refused.
        await publish(api, "four.example")
        mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED and f.current.serial == 4
        fake, name, snap = forged(note, state, 1002, thief.key, thief.chain)
        host.files.update({"notification.bin": fake, name: snap})
        with pytest.raises(SigningError):
            await f.poll_once()
        # The recovery is taken once: the stored replay state says so across a restart.
        await f.close()
        f = static_follower(api, host, tmp_path, max_serial_jump=1000)
        await f.load()
        assert f.current.serial == 4 and f.replay.session == rev.recover_session
    finally:
        await f.close()


async def test_a_stolen_key_cannot_forge_a_recovery(api, host, tmp_path) -> None:
    """Only the root names a recovery session: a thief starting its own session is held to the
    serial order."""
    f = await synced(api, host, tmp_path)
    try:
        thief = api.authority.signer
        note = open_notification(host.files["notification.bin"], [api.root], now())
        fake, name, snap = forged(
            note, f.current.state, 1, thief.key, thief.chain, str(uuid.uuid4())
        )
        host.files.update({"notification.bin": fake, name: snap})
        with pytest.raises(RollbackError):
            await f.poll_once()
    finally:
        await f.close()


# ---------------------------------------------------------------- damaged state plus replay


async def test_damaged_state_file_plus_replay_is_refused(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    old = host.files["notification.bin"]  # serial 1, unexpired
    old_files = dict(host.files)
    try:
        await publish(api, "three.example")
        mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED
    finally:
        await f.close()
    state_file = tmp_path / "sync-state" / persist.STATE_FILE
    state_file.write_bytes(b"\0" * 100)  # damaged
    host.files = {**old_files, "notification.bin": old}
    f = static_follower(api, host, tmp_path)
    try:
        assert await f.load() is None
        assert "no_list" in f.alarms and f.replay.serial == 2
        with pytest.raises(RollbackError):
            await f.poll_once()
        assert f.current is None and "no_list" in f.alarms
        status = json.loads((tmp_path / "sync-state" / STATUS_FILE).read_text())
        assert status["state"] == "no_list" and status["last_error"]["kind"] == "rollback"
        mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED and f.current.serial == 2
    finally:
        await f.close()


async def test_damaged_replay_file_raises_an_alarm(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    await f.close()
    (tmp_path / "sync-state" / replay_file.REPLAY_FILE).write_text("{not json")
    f = static_follower(api, host, tmp_path)
    try:
        await f.load()
        assert "replay_state" in f.alarms and f.last_error["kind"] == "replay_state"
        # The list in force is the floor meanwhile; the next accepted notification rewrites it.
        assert f.replay.serial == 1
        await publish(api, "three.example")
        mirror(api, host)
        assert (await f.poll_once()).result is Result.APPLIED
        assert "replay_state" not in f.check_freshness()
        assert replay_file.load(tmp_path / "sync-state").serial == 2
    finally:
        await f.close()


def test_state_files_are_private(tmp_path: Path) -> None:
    from blocklist.sync.local import LocalSigner

    signer = LocalSigner.generate(now())
    # Under a strict umask too: the group (resolver, stop page) must still read the list.
    for serial, umask in ((1, 0o022), (2, 0o077)):
        old = os.umask(umask)
        try:
            signer.save(tmp_path, ListState.empty(), serial=serial, now=now())
            replay_file.save(tmp_path, replay_file.ReplayState(session="s", serial=serial))
        finally:
            os.umask(old)
        for name in (persist.STATE_FILE, replay_file.REPLAY_FILE):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, (name, oct(umask))


# ---------------------------------------------------------------- k of n roots, rotation


async def test_two_of_three_roots_rotation_and_retired_roots(tmp_path: Path, monkeypatch) -> None:
    import authority_fixtures

    made: list[str] = []

    def three_roots(directory: Path, when: int) -> str:
        made.extend(keyring.ceremony(directory, when, roots=3, threshold=2).split("\n"))
        return made[0]

    monkeypatch.setattr(authority_fixtures, "ceremony", three_roots)
    api = await start_authority(tmp_path / "a")
    pins = list(made)
    kd = keys_dir(api)
    host = StaticHost()
    await host.server.start_server()
    roots = [kd / f"root-{i}.key" for i in (1, 2, 3)]
    f = None
    try:
        await publish(api, "one.example")
        mirror_note = _mirror_any(api, host)
        assert mirror_note.serial == 1
        config = sync_config(
            tmp_path,
            base_url(api),
            "",
            parse_public_key(pins[0]),
            notification_url=host.url,
            root_keys=pins,
            root_threshold=2,
        )
        f = Follower(config)
        await f.load()
        assert (await f.poll_once()).result is Result.APPLIED
        # One root holder alone cannot renew.
        with pytest.raises(CertificateError) as info:
            keyring.new_signing_key(kd, [roots[0]], now())
        assert "needs 2" in str(info.value)
        # A key set signed by one root only (a single corrupt holder) is refused by ASPs.
        thief = load_private_key(kd / "signing.key")
        lone = key_set_for(thief, [load_private_key(roots[0])], version=50)
        note = open_notification(host.files["notification.bin"], [parse_public_key(pins[0])], now())
        host.files["notification.bin"] = sign_notification(
            note.model_copy(update={"expires": note.expires + 1}), thief, [lone]
        )
        with pytest.raises(SigningError) as sig:
            await f.poll_once()
        assert "2 needed" in str(sig.value)
        # Two holders renew; then two holders rotate to a new 2-of-2 root set.
        keyring.new_signing_key(kd, [roots[1], roots[2]], now())
        new_pins = keyring.rotate_root(kd, [roots[0], roots[2]], now(), roots=2, threshold=2)
        assert set(new_pins).isdisjoint(pins)
        assert api.authority.reload_signer_if_renewed()
        await publish(api, "two.example")
        _mirror_any(api, host)
        assert (await f.poll_once()).result is Result.APPLIED
        assert f.replay.root_version == 2 and f.current.serial == 2
        # The retired roots (2 of them, even all 3) can no longer vouch for a key.
        old_set = key_set_for(thief, [load_private_key(p) for p in roots], version=99)
        note = open_notification(
            host.files["notification.bin"], [parse_public_key(new_pins[0])], now()
        )
        host.files["notification.bin"] = sign_notification(
            note.model_copy(update={"expires": note.expires + 1}), thief, [old_set]
        )
        with pytest.raises(CertificateError) as info:
            await f.poll_once()
        assert info.value.reason == "superseded"
        # An ASP installed after the rotation pins only the new roots and follows too.
        config2 = sync_config(
            tmp_path / "later",
            base_url(api),
            "",
            parse_public_key(new_pins[0]),
            notification_url=host.url,
            root_keys=new_pins,
            root_threshold=2,
        )
        later = Follower(config2)
        try:
            _mirror_any(api, host)
            assert (await later.poll_once()).result is Result.APPLIED
        finally:
            await later.close()
    finally:
        if f is not None:
            await f.close()
        await host.server.close()
        await api.client.close()


def _mirror_any(api: RunningAuthority, host: StaticHost) -> Notification:
    directory = api.authority.publish_dir / "hashed"
    for path in directory.iterdir():
        host.files[path.name] = path.read_bytes()
    return payload_note(host.files["notification.bin"])


# ---------------------------------------------------------------- hostile mirrors


class HeaderLoggingMirror(StaticHost):
    """A static mirror that records every request's headers and query string."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path_qs, dict(request.headers)))
        data = self.files.get(request.match_info["name"])
        if data is not None and not self.status:
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(body=data, headers={"ETag": etag})
        return await super().handle(request)


async def test_token_never_reaches_a_mirror_and_fallbacks_are_recorded(api, tmp_path) -> None:
    bad, good = HeaderLoggingMirror(), HeaderLoggingMirror()
    for m in (bad, good):
        await m.server.start_server()
    api_url = f"{base_url(api)}/v1/list/hashed/notification"
    config = sync_config(
        tmp_path,
        base_url(api),
        api.tokens["isp"],
        api.root,
        notification_url=[bad.url, good.url, api_url],
    )
    f = Follower(config)
    try:
        await publish(api, "one.example")
        mirror(api, bad)
        mirror(api, good)
        # The first mirror is hostile: it serves a tampered notification.
        tampered = bytearray(bad.files["notification.bin"])
        tampered[len(tampered) // 2] ^= 1
        bad.files["notification.bin"] = bytes(tampered)
        await f.load()
        assert (await f.poll_once(wait=5)).result is Result.APPLIED
        assert f.source.notification_url == good.url
        status = json.loads((tmp_path / "sync-state" / STATUS_FILE).read_text())
        assert status["fallbacks"] and bad.url in status["fallbacks"][0]
        assert f.metrics.fallbacks._value.get() == 1
        # Both static mirrors down: the API (the only origin that gets the token) answers.
        bad.status = good.status = 503
        await publish(api, "two.example")
        assert (await f.poll_once(wait=5)).result is Result.APPLIED
        assert f.source.notification_url == api_url
        await f.flush_acks()
        # A second poll of an unchanged mirror is a conditional GET answered 304.
        bad.status = good.status = None
        mirror(api, bad)
        await f.poll_once(wait=5)
        await f.poll_once(wait=5)
        assert f.source.not_modified >= 1
        for m in (bad, good):
            assert m.seen
            for path_qs, headers in m.seen:
                assert "authorization" not in {h.lower() for h in headers}, (path_qs, headers)
                assert "wait=" not in path_qs and "after=" not in path_qs, path_qs
        assert any("If-None-Match" in h for _, h in bad.seen)
        # Acks went to the API with the token (they were accepted).
        _, body = await api.call("alice", "GET", "/v1/compliance")
        assert "dns-1" in json.dumps(body)
    finally:
        await f.close()
        for m in (bad, good):
            await m.server.close()


async def test_every_mirror_failing_reaches_status_and_metrics(api, tmp_path) -> None:
    a, b = StaticHost(), StaticHost()
    for m in (a, b):
        await m.server.start_server()
    config = sync_config(tmp_path, base_url(api), "", api.root, notification_url=[a.url, b.url])
    f = Follower(config)
    try:
        await publish(api, "one.example")
        mirror(api, a)
        mirror(api, b)
        a.status = 500
        b.files["notification.bin"] = b"x" * (300 * 1024)  # oversized
        with pytest.raises((FetchError, ArtefactError)):
            await f.poll_once()
        status = json.loads((tmp_path / "sync-state" / STATUS_FILE).read_text())
        assert status["last_error"]["kind"] == "fetch"
        assert "500" in status["last_error"]["message"]
        assert "bytes" in status["last_error"]["message"]
        assert f.metrics.errors.labels("fetch")._value.get() == 1
    finally:
        await f.close()
        for m in (a, b):
            await m.server.close()


# ---------------------------------------------------------------- churn


async def test_wholesale_replacement_held_whatever_the_size(api, host, tmp_path) -> None:
    ids = [await add_and_approve(api, f"old{i}.example") for i in range(8)]
    await api.call("alice", "POST", "/v1/publish")
    mirror(api, host)
    # Default net-size rails (min_change 1000) would let any change of an 8-entry list through.
    f = static_follower(api, host, tmp_path, rails={"min_churn": 4})
    try:
        await f.poll_once()
        for entry in ids:
            await delist(api, entry)
        await publish(api, *[f"new{i}.example" for i in range(8)])
        note = mirror(api, host)
        outcome = await f.poll_once()
        assert outcome.result is Result.HELD and outcome.hold.reason == "additions"
        assert "8 added, 8 removed" in outcome.hold.message
        assert f.sync_state() == "held" and "held" in f.alarms
        host.files["notification.bin"] = resign(api, note.model_copy(update={"bulk_change": True}))
        assert (await f.poll_once()).result is Result.APPLIED
    finally:
        await f.close()


async def test_held_update_keeps_long_polling(api, tmp_path) -> None:
    """After a hold the follower keeps a long-poll open past the held serial, so the
    authority's correction is applied as soon as it is published."""
    await publish(api, *[f"keep{i}.example" for i in range(8)])
    config = sync_config(
        tmp_path,
        base_url(api),
        api.tokens["isp"],
        api.root,
        long_poll_seconds=30,
        rails={"min_churn": 2},
    )
    f = Follower(config)
    task = asyncio.create_task(f.run())
    try:
        await _until(lambda: f.current is not None and f.current.serial == 1)
        burst = [await add_and_approve(api, f"burst{i}.example") for i in range(5)]
        await api.call("alice", "POST", "/v1/publish")
        await _until(lambda: f.held is not None)
        # The correction: the burst withdrawn. Same state as in force, new serial.
        for entry in burst:
            await delist(api, entry)
        await api.call("alice", "POST", "/v1/publish")
        # min_poll_interval is 60 s: only an open long-poll brings the correction in time.
        await _until(lambda: f.current.serial == 3, timeout=20)
        assert f.held is None
    finally:
        f.stop()
        await task
        await f.close()


async def _until(predicate, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_trust_documents_refuse_bad_input() -> None:
    from signing import EnvelopeError, generate_key
    from signing.trust import RootSet, add_signature, open_document, verify_trust

    r1, r2, k = generate_key(), generate_key(), generate_key()
    payload = keyset_payload(
        version=1,
        root_version=1,
        issued=1,
        keys=[SetKey(public_key_raw(k), "k", 0, 10)],
    )
    doc = sign_document([r1], DocType.KEY_SET, payload)
    anchor = RootSet((public_key_raw(r1), public_key_raw(r2)), 2)
    with pytest.raises(SigningError, match="1 valid signature"):
        verify_trust(anchor, [doc])
    both = add_signature(doc, r2)
    assert verify_trust(anchor, [both]).keyset.version == 1
    with pytest.raises(EnvelopeError):
        add_signature(both, r2)  # the same holder twice does not count twice
    # Built by hand (not through add_signature): r1's signature twice must not pass a 2 of 2.
    body_end = len(doc) - 1 - (8 + 64)
    one_sig = doc[body_end + 1 :]
    doubled = doc[:body_end] + bytes([2]) + one_sig + one_sig
    with pytest.raises(SigningError):
        verify_trust(anchor, [doubled])
    flipped = bytearray(both)
    flipped[20] ^= 1
    with pytest.raises(SigningError):
        verify_trust(anchor, [bytes(flipped)])
    with pytest.raises(EnvelopeError):
        open_document(both + b"x", DocType.KEY_SET, anchor.ids, 1, "key set")
    with pytest.raises(EnvelopeError):
        open_document(both, DocType.ROOT, anchor.ids, 1, "key set")
    with pytest.raises(CertificateError):
        keyset_payload(
            version=1,
            root_version=1,
            issued=1,
            keys=[SetKey(public_key_raw(k), "k", 0, 10)],
            revoked=[key_id(public_key_raw(k))],
        )
    assert format_public_key(public_key_raw(k)).startswith("ed25519:")


def test_units_keep_the_list_to_its_group() -> None:
    units = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
    sync = (units / "cordon-sync.service").read_text()
    assert "StateDirectoryMode=0750" in sync and "UMask=0027" in sync
    assert "Group=cordon-list" in sync
    for reader in ("cordon-resolver.service", "cordon-stoppage.service"):
        assert "SupplementaryGroups=cordon-list" in (units / reader).read_text(), reader
    assert "g cordon-list" in (units / "cordon.sysusers.conf").read_text()


async def test_stored_file_is_checked_at_its_signed_time(api, host, tmp_path) -> None:
    """`verified_at` in state.bin is not signed: a key past its window cannot come back by a
    stored file that claims it was verified while the key was valid."""
    f = await synced(api, host, tmp_path)
    await f.close()
    signer = api.authority.signer
    window_end = signer.verify(now()).expires_soonest()
    good = open_notification(host.files["notification.bin"], [api.root], now())
    late = good.model_copy(update={"created": window_end + 10, "expires": window_end + 99})
    data = sign_notification(late, signer.key, signer.chain)
    persist.save(
        tmp_path / "sync-state", persist.VerifiedList(f.current.state, late, data, now(), 1)
    )
    f = static_follower(api, host, tmp_path)
    try:
        assert await f.load() is None
        assert f.last_error["kind"] == "state_file" and "expired" in f.last_error["message"]
    finally:
        await f.close()


async def test_recovery_in_the_real_sync_process(api, host, tmp_path) -> None:
    """The same attack against `resolver sync --once` processes sharing one state directory: the
    ASP is poisoned, refuses the genuine serial, then recovers from the root-signed statement
    with nothing deleted, and `--status` is clean again."""
    import os
    import subprocess
    import sys

    await publish(api, "one.example", "two.example")
    mirror(api, host)
    state_dir = tmp_path / "asp"
    toml = tmp_path / "resolver.toml"
    toml.write_text(
        "[sync]\n"
        f'authority_url = "{base_url(api)}"\n'
        f'notification_url = "{host.url}"\n'
        f'root_keys = ["{format_public_key(api.root)}"]\n'
        f'state_dir = "{state_dir}"\n'
        'instance = "asp-process"\n'
        "max_serial_jump = 1000\n"
        "request_timeout = 5\n"
    )
    root_dir = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root_dir)}

    def run(*flags: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "resolver.cli", "sync", "--config", str(toml), *flags]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    result = await asyncio.to_thread(run, "--once")
    assert result.returncode == 0 and "serial 1" in result.stdout, result.stderr
    thief = api.authority.signer
    note = open_notification(host.files["notification.bin"], [api.root], now())
    state = persist.load(state_dir, [api.root], 1000).state
    fake, name, snap = forged(note, state, 1001, thief.key, thief.chain)
    host.files.update({"notification.bin": fake, name: snap})
    result = await asyncio.to_thread(run, "--once")
    assert result.returncode == 0 and "serial 1001" in result.stdout, result.stderr
    await publish(api, "three.example")
    mirror(api, host)
    result = await asyncio.to_thread(run, "--once")
    assert result.returncode == 1 and "not newer" in result.stderr
    assert (await asyncio.to_thread(run, "--status")).returncode == 0  # no alarm, just refused
    stolen = key_id(public_key_raw(thief.key)).hex()
    rev = keyring.revoke(keys_dir(api), [keys_dir(api) / "root.key"], [stolen], now(), recover=True)
    assert api.authority.reload_signer_if_renewed()
    mirror(api, host)
    result = await asyncio.to_thread(run, "--once")
    assert result.returncode == 0 and "serial 3" in result.stdout, result.stderr
    loaded = persist.load(state_dir, [api.root], 1000)
    assert loaded.serial == 3 and loaded.notification.session == rev.recover_session
    assert (await asyncio.to_thread(run, "--status")).returncode == 0


def test_recovery_session_is_started_once_across_restarts(tmp_path: Path) -> None:
    from blocklist.authority.publisher import Publisher
    from blocklist.state import Entry, Kind

    kd = tmp_path / "keys"
    keyring.ceremony(kd, now())

    def open_publisher() -> Publisher:
        signer = keyring.load_signer(kd)
        return Publisher(
            tmp_path / "pub", "national", "A", signer.key, signer.chain, pinned_root=signer.root
        )

    pub = open_publisher()
    first = pub.publish([], [Entry.from_value("one.example", 1, Kind.DOMAIN)])
    stolen = key_id(public_key_raw(keyring.load_signer(kd).key)).hex()
    rev = keyring.revoke(kd, [kd / "root.key"], [stolen], now(), recover=True)
    # The authority restarts (instead of reloading): the recovery session starts at once...
    pub = open_publisher()
    current = pub.current()
    assert str(current.session) == rev.recover_session and current.serial == first.serial + 1
    # ...and only once.
    pub = open_publisher()
    assert pub.current().serial == first.serial + 1
    pub.publish([], [Entry.from_value("two.example", 2, Kind.DOMAIN)])
    pub = open_publisher()
    assert str(pub.current().session) == rev.recover_session


def test_key_commands_refuse_bad_input(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    keyring.ceremony(kd, now())
    with pytest.raises(CertificateError, match="16-hex-digit key id"):
        keyring.revoke(kd, [kd / "root.key"], ["xyz"], now())
    stranger = tmp_path / "stranger.key"
    from signing import generate_key, save_private_key

    save_private_key(stranger, generate_key())
    with pytest.raises(CertificateError, match="not a root key in force"):
        keyring.new_signing_key(kd, stranger, now())
    with pytest.raises(CertificateError, match="threshold"):
        keyring.rotate_root(kd, [kd / "root.key"], now(), roots=2, threshold=3)
    with pytest.raises(CertificateError, match="threshold"):
        keyring.ceremony(tmp_path / "other", now(), roots=2, threshold=3)
    # Nothing was changed by the refusals: the service still signs with key set 1.
    assert keyring.key_state(kd).version == 1


async def test_a_mirror_withholding_updates_is_passed_over(api, tmp_path) -> None:
    """A first mirror that keeps serving an old, unexpired notification delays updates only
    by `stale_mirror_minutes`, not until the notification expires."""
    a, b = StaticHost(), StaticHost()
    for m in (a, b):
        await m.server.start_server()
    config = sync_config(
        tmp_path,
        base_url(api),
        "",
        api.root,
        notification_url=[a.url, b.url],
        stale_mirror_minutes=60,
    )
    f = Follower(config)
    try:
        await publish(api, "one.example")
        mirror(api, a)
        mirror(api, b)
        assert (await f.poll_once()).result is Result.APPLIED
        await publish(api, "two.example")
        mirror(api, b)  # a withholds serial 2
        assert (await f.poll_once()).result is Result.UNCHANGED  # fresh enough: a is trusted
        assert f.source.index == 0
        f.clock = lambda: time.time() + 2 * 3600  # the list in force was signed 2 h ago
        assert (await f.poll_once()).result is Result.APPLIED and f.current.serial == 2
        assert f.source.index == 1 and "nothing newer" in f.fallbacks[0]
    finally:
        await f.close()
        for m in (a, b):
            await m.server.close()
