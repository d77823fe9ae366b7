"""RPZ feed, unit level: serial arithmetic, zone building, IXFR diffs, transfer wire, config."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from pathlib import Path

import dns.message
import dns.name
import dns.opcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig
import dns.xfr
import dns.zone
import pytest
from rpz_fixtures import ROOT_PUB, plain_state

from blocklist.config import ConfigError, validate_config
from resolver.rpz import cli, wire
from resolver.rpz import serial as rfc1982
from resolver.rpz.config import RpzConfig, check_serve, load_rpz_config, load_tsig_key
from resolver.rpz.export import export_settings
from resolver.rpz.notify import notify_message
from resolver.rpz.zone import (
    UP_TO_DATE,
    Diff,
    History,
    ZoneSettings,
    ZoneVersion,
    build_version,
    diff_versions,
    domain_values,
    plan_ixfr,
    to_dns_zone,
    write_master_file,
)

REPO = Path(__file__).resolve().parent.parent
ORIGIN = dns.name.from_text("rpz.cordon.example.")
SETTINGS = ZoneSettings(origin=ORIGIN)


def records(zone: dns.zone.Zone) -> set[tuple[str, int, str, str]]:
    """A zone's records as comparable text (absolute owner names)."""
    out = set()
    for name, node in zone.nodes.items():
        owner = name.derelativize(zone.origin).to_text()
        for rds in node.rdatasets:
            for rd in rds:
                text = rd.to_text(origin=zone.origin, relativize=False)
                out.add((owner, rds.ttl, dns.rdatatype.to_text(rds.rdtype), text))
    return out


# What each action puts at both owners of an entry, as docs/rpz.md describes it.
ACTION_RECORDS = {
    "cname": [("CNAME", "stop.isp.example.")],
    "nxdomain": [("CNAME", ".")],
    "nodata": [("CNAME", "*.")],
    "local": [("A", "192.0.2.80"), ("AAAA", "2001:db8::80")],
}


def spelled_zone(values: list[str], serial: int, action: str = "cname") -> set:
    """The records of the zone for `values`, written out (default settings otherwise)."""
    want = {
        (
            "rpz.cordon.example.",
            60,
            "SOA",
            f"localhost. hostmaster.cordon.invalid. {serial} 300 60 2419200 60",
        ),
        ("rpz.cordon.example.", 60, "NS", "localhost."),
    }
    for value in values:
        for owner in (f"{value}.rpz.cordon.example.", f"*.{value}.rpz.cordon.example."):
            want |= {(owner, 60, t, rd) for t, rd in ACTION_RECORDS[action]}
    return want


def apply_diffs(names: Iterable[str], diffs: Iterable[Diff]) -> set[str]:
    """What a secondary holds after applying `diffs`."""
    out = set(names)
    for d in diffs:
        out.difference_update(d.removed)
        out.update(d.added)
    return out


def version(values: list[str], serial: int) -> ZoneVersion:
    return ZoneVersion(rfc1982.zone_serial(serial), serial, tuple(values))


# ------------------------------------------------------------------------------- RFC 1982


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1, 0),
        (1, 2, -1),
        (2, 1, 1),
        (0xFFFFFFFF, 0, -1),  # wraps: 0 comes after 2**32 - 1
        (0, 0xFFFFFFFF, 1),
        (5, 5 + 2**31 - 1, -1),
        (5 + 2**31 - 1, 5, 1),
        (7, 7 + 2**31, None),  # exactly half the space apart: undefined
        (2**32 + 3, 3, 0),  # compared modulo 2**32
    ],
)
def test_rfc1982_compare(a: int, b: int, expected: int | None) -> None:
    assert rfc1982.compare(a, b) == expected


def test_rfc1982_add_and_zone_serial() -> None:
    assert rfc1982.add(0xFFFFFFFF, 1) == 0
    assert rfc1982.newer(rfc1982.add(0xFFFFFFF0, 100), 0xFFFFFFF0)
    with pytest.raises(ValueError):
        rfc1982.add(1, 2**31)
    # The list serial is a u64; the SOA serial is its low 32 bits, still "newer" across a wrap.
    assert rfc1982.zone_serial(2**32 + 7) == 7
    assert rfc1982.newer(rfc1982.zone_serial(2**32 + 7), rfc1982.zone_serial(2**32 - 3))


# ---------------------------------------------------------------------------- zone building


def test_domain_values_skip_urls_long_and_reserved_names() -> None:
    long_value = ".".join(["a" * 60] * 4)  # 243 bytes: fine alone, too long under the zone
    state = plain_state(
        ["blocked.example", "xn--bcher-kva.example", long_value, "x.rpz-ip"],
        urls=["shared.example/album/1", "shared.example/album/2"],
    )
    values, skipped = domain_values(state, SETTINGS.origin_wire_len)
    assert sorted(values) == ["blocked.example", "xn--bcher-kva.example"]
    assert (skipped.url, skipped.too_long, skipped.reserved) == (2, 1, 1)
    assert skipped.total == 4
    with pytest.raises(ValueError, match="hashed edition"):
        domain_values(state.hashed(), SETTINGS.origin_wire_len)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (SETTINGS, [("CNAME", "stop.isp.example.")]),
        (
            ZoneSettings(origin=ORIGIN, action="cname", cname_target=dns.name.from_text("s.x.")),
            [("CNAME", "s.x.")],
        ),
        (ZoneSettings(origin=ORIGIN, action="nxdomain"), [("CNAME", ".")]),
        (ZoneSettings(origin=ORIGIN, action="nodata"), [("CNAME", "*.")]),
        (
            ZoneSettings(origin=ORIGIN, action="local", ipv4="192.0.2.80", ipv6="2001:db8::80"),
            [("A", "192.0.2.80"), ("AAAA", "2001:db8::80")],
        ),
    ],
)
def test_each_entry_is_two_owners_with_the_action(settings: ZoneSettings, expected) -> None:
    v = build_version(plain_state(["blocked.example", "xn--bcher-kva.example"]), 9, settings)
    got = records(to_dns_zone(v, settings))
    soa = settings.soa_rdata(9).to_text()
    want = {
        ("rpz.cordon.example.", 60, "SOA", soa),
        ("rpz.cordon.example.", 60, "NS", "localhost."),
    }
    for value in ("blocked.example", "xn--bcher-kva.example"):
        for owner in (f"{value}.rpz.cordon.example.", f"*.{value}.rpz.cordon.example."):
            want |= {(owner, 60, t, rd) for t, rd in expected}
    assert got == want


def test_master_file_parses_back_to_the_same_zone() -> None:
    settings = ZoneSettings(origin=ORIGIN, action="local", ipv4="192.0.2.80")
    v = build_version(
        plain_state(["blocked.example", "a.b.example"], urls=["u.example/x"]), 3, settings
    )
    out = io.StringIO()
    count = write_master_file(v, settings, out)
    assert count == 2 + 2 * 2
    text = out.getvalue()
    assert "1 list entries are not in this zone: 1 URL entries" in text
    parsed = dns.zone.from_text(text, origin=ORIGIN, relativize=False)
    want = spelled_zone(["blocked.example", "a.b.example"], 3, "local")
    assert records(parsed) == {r for r in want if r[2] != "AAAA"}  # no IPv6 configured


# ------------------------------------------------------------------------------- IXFR history


def test_diff_and_history_chain() -> None:
    v1 = version(["a.example", "b.example", "c.example"], 1)
    v2 = version(["a.example", "c.example", "d.example"], 2)
    v3 = version(["d.example", "e.example"], 3)
    d12, d23 = diff_versions(v1, v2), diff_versions(v2, v3)
    assert (d12.removed, d12.added) == (("b.example",), ("d.example",))
    assert (d23.removed, d23.added) == (("a.example", "c.example"), ("e.example",))
    h = History(keep=8)
    h.record(d12)
    h.record(d23)
    assert plan_ixfr(h, v3, 3) == UP_TO_DATE
    assert plan_ixfr(h, v3, 4) == UP_TO_DATE  # a client ahead of us: nothing to send
    assert plan_ixfr(h, v3, 2) == [d23]
    chain = plan_ixfr(h, v3, 1)
    assert chain == [d12, d23]
    assert apply_diffs(v1.values, chain) == set(v3.values)
    assert plan_ixfr(h, v3, 0) is None  # older than the history: full transfer


def test_history_keeps_the_last_n_and_only_contiguous_diffs() -> None:
    versions = [version([f"n{i}.example"], i) for i in range(1, 7)]
    h = History(keep=2)
    for a, b in itertools.pairwise(versions):
        h.record(diff_versions(a, b))
    assert len(h) == 2 and h.oldest_serial == 4
    assert plan_ixfr(h, versions[-1], 4) is not None
    assert plan_ixfr(h, versions[-1], 3) is None
    # A diff that does not start at the last serial breaks the chain: start over from it.
    h.record(diff_versions(version(["x.example"], 10), version(["y.example"], 11)))
    assert len(h) == 1 and h.oldest_serial == 10
    none = History(keep=0)
    none.record(diff_versions(versions[0], versions[1]))
    assert len(none) == 0 and plan_ixfr(none, versions[1], 1) is None


def test_serial_wrap_in_the_history() -> None:
    a = version(["a.example"], 2**32 - 1)
    b = version(["b.example"], 2**32)  # SOA serial 0
    h = History(keep=4)
    h.record(diff_versions(a, b))
    assert b.serial == 0
    assert plan_ixfr(h, b, 2**32 - 1) == [diff_versions(a, b)]
    assert plan_ixfr(h, b, 0) == UP_TO_DATE


# ---------------------------------------------------------------------------- transfer wire


QUESTION_AXFR = ORIGIN.to_wire() + b"\x00\xfc\x00\x01"
QUESTION_IXFR = ORIGIN.to_wire() + b"\x00\xfb\x00\x01"


def receive(
    messages: list[bytes], zone: dns.zone.Zone, rdtype, serial=None, key=None, request_mac=b""
):
    """Feed raw transfer messages to dnspython's inbound transfer machinery."""
    with dns.xfr.Inbound(zone, rdtype, serial) as inbound:
        ctx = None
        for data in messages:
            msg = dns.message.from_wire(
                data,
                keyring=key,
                request_mac=request_mac,
                xfr=True,
                origin=zone.origin if zone.relativize else None,
                tsig_ctx=ctx,
                multi=True,
                one_rr_per_rrset=True,
            )
            ctx = msg.tsig_ctx
            done = inbound.process_message(msg)
        assert done


@pytest.mark.parametrize("action", ["cname", "local", "nxdomain"])
@pytest.mark.parametrize("max_size", [1024, 65535])
def test_axfr_messages_rebuild_the_zone(action: str, max_size: int) -> None:
    settings = ZoneSettings(origin=ORIGIN, action=action, ipv4="192.0.2.80", ipv6="2001:db8::80")
    names = [f"host-{i}.blocked-{i % 7}.example" for i in range(600)]
    v = build_version(plain_state(names), 5, settings)
    msgs = list(
        wire.render(
            7,
            QUESTION_AXFR,
            wire.axfr_items(v, settings),
            wire.Policy.from_settings(settings),
            max_size,
            False,
        )
    )
    assert all(len(m) <= max_size for m in msgs)
    if max_size == 1024:
        assert len(msgs) > 20
    else:
        # Records past offset 0x3FFF cannot be pointed at: names are then written out.
        assert any(len(m) > 0x4000 for m in msgs)
    zone = dns.zone.Zone(ORIGIN, relativize=False)
    receive(msgs, zone, dns.rdatatype.AXFR)
    assert records(zone) == spelled_zone(names, 5, action)


def test_ixfr_sequences_apply_to_the_old_zone() -> None:
    v1 = build_version(plain_state(["a.example", "b.example", "c.example"]), 1, SETTINGS)
    v2 = build_version(plain_state(["a.example", "c.example", "d.example"]), 2, SETTINGS)
    v3 = build_version(plain_state(["d.example", "e.example"]), 3, SETTINGS)
    diffs = [diff_versions(v1, v2), diff_versions(v2, v3)]
    msgs = list(
        wire.render(
            1,
            QUESTION_IXFR,
            wire.ixfr_items(v3, SETTINGS, diffs),
            wire.Policy.from_settings(SETTINGS),
            512 + 512,
            False,
        )
    )
    zone = to_dns_zone(v1, SETTINGS)
    assert records(zone) == spelled_zone(["a.example", "b.example", "c.example"], 1)
    receive(msgs, zone, dns.rdatatype.IXFR, serial=1)
    assert records(zone) == spelled_zone(["d.example", "e.example"], 3)


def test_tsig_chain_over_many_messages_verifies() -> None:
    key = dns.tsig.Key("cordon-rpz.", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnl0", "hmac-sha256")
    query = dns.message.make_query(ORIGIN, dns.rdatatype.AXFR)
    query.use_tsig(key)
    qwire = query.to_wire()
    names = [f"n{i}.example" for i in range(500)]
    v = build_version(plain_state(names), 4, SETTINGS)
    signer = wire.Signer(key, query.mac, query.id)
    policy = wire.Policy.from_settings(SETTINGS)
    unsigned = wire.render(
        query.id, QUESTION_AXFR, wire.axfr_items(v, SETTINGS), policy, 2048, True
    )
    msgs = [signer.sign(m) for m in unsigned]
    assert len(msgs) > 5 and all(len(m) <= 2048 for m in msgs)
    zone = dns.zone.Zone(ORIGIN, relativize=False)
    receive(msgs, zone, dns.rdatatype.AXFR, key=key, request_mac=query.mac)
    assert records(zone) == spelled_zone(names, 4)
    # One flipped byte anywhere in the chain breaks it.
    bad = list(msgs)
    bad[3] = bad[3][:40] + bytes([bad[3][40] ^ 1]) + bad[3][41:]
    with pytest.raises(dns.tsig.BadSignature):
        receive(
            bad,
            dns.zone.Zone(ORIGIN, relativize=False),
            dns.rdatatype.AXFR,
            key=key,
            request_mac=query.mac,
        )
    assert qwire  # the query itself was signed too


def test_notify_message_is_a_notify_with_the_soa() -> None:
    msg = notify_message(SETTINGS, 42)
    assert msg.opcode() == dns.opcode.NOTIFY
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RD
    assert msg.question[0].name == ORIGIN
    assert msg.answer[0][0].serial == 42


# ------------------------------------------------------------------------------------ config


def write_toml(tmp_path: Path, body: str, name: str = "rpz.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"""
[sync]
root_keys = ["{ROOT_PUB}"]
edition = "plain"
state_dir = "state"
{body}
""",
        encoding="utf-8",
    )
    return path


def test_deploy_example_loads() -> None:
    config = load_rpz_config(REPO / "deploy" / "rpz.toml")
    assert config.rpz.zone == "rpz.cordon.example."
    assert config.sync.edition == "plain"
    assert config.rpz.transfer.tsig_secret_file == Path("/etc/cordon/rpz-tsig.key")
    assert config.rpz.notify.addresses == [("192.0.2.2", 53), ("192.0.2.3", 5353)]
    # What deploy/systemd/cordon-rpz-export.service runs works with it: kresd gets local data.
    assert export_settings(config, "kresd").action == "local"
    assert config.rpz.export.output == Path("/var/lib/cordon-rpz/rpz.zone")


def test_hashed_edition_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[rpz.transfer]\nunsigned_allow = ["127.0.0.1"]\n')
    path.write_text(path.read_text().replace('edition = "plain"', 'edition = "hashed"'))
    with pytest.raises(ConfigError) as info:
        load_rpz_config(path)
    assert str(path) in str(info.value) and "sync.edition" in str(info.value)
    assert "plain" in str(info.value)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            '[rpz]\naction = "redirect"\n[rpz.transfer]\nunsigned_allow = ["127.0.0.1"]',
            "rpz.action",
        ),
        (
            "[rpz]\nzon = 'x.'\n[rpz.transfer]\nunsigned_allow = ['127.0.0.1']",
            "rpz.zon: unknown key",
        ),
        ("[rpz]\nzone = 'bad..name'\n[rpz.transfer]\nunsigned_allow = ['127.0.0.1']", "rpz.zone"),
        (
            "[rpz.transfer]\nallow = ['not-a-net']\nunsigned_allow = ['127.0.0.1']",
            "rpz.transfer.allow",
        ),
        ("[rpz]\naction = 'cname'\n[rpz.export]\ntarget = 'kresd'", "Knot Resolver ignores"),
        (
            "[rpz]\nipv4 = '192.0.2.80'\n[rpz.export]\ntarget = 'kresd'\naction = 'cname'",
            "rpz.export.action = 'cname': Knot Resolver cannot enforce it",
        ),
        ("[rpz.export]\nmin_interval = -1", "rpz.export.min_interval"),
        (
            "[rpz]\naction = 'local'\n[rpz.transfer]\nunsigned_allow = ['127.0.0.1']",
            'rpz.action = "local" needs rpz.ipv4',
        ),
        (
            "[rpz.notify]\ntargets = ['ns1.isp.example']\n"
            "[rpz.transfer]\nunsigned_allow = ['127.0.0.1']",
            "rpz.notify.targets",
        ),
        (
            "[rpz.soa]\nrefresh = 600\nexpire = 60\n[rpz.transfer]\nunsigned_allow = ['127.0.0.1']",
            "rpz.soa",
        ),
        (
            "[rpz.metrics]\nlisten = '192.0.2.1'\n[rpz.transfer]\nunsigned_allow = ['127.0.0.1']",
            "rpz.metrics.listen",
        ),
        ("[rpx]\nzone = 'x.'", "rpx: unknown key"),
        ("", "rpz: Field required"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    path = write_toml(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_rpz_config(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_serve_needs_transfer_settings_export_does_not(tmp_path: Path, capsys) -> None:
    path = write_toml(tmp_path, "[rpz]\n[rpz.transfer]")
    config = load_rpz_config(path)  # enough for `export`
    with pytest.raises(ConfigError) as info:
        check_serve(config, str(path))
    assert str(path) in str(info.value) and "rpz.transfer.tsig_secret_file" in str(info.value)
    check_serve(
        load_rpz_config(write_toml(tmp_path, "[rpz.transfer]\nunsigned_allow = ['::1']")), "t"
    )
    path = write_toml(tmp_path, "[rpz]\n")
    assert cli.main(["serve", "--config", str(path)]) == 2  # before any socket or list
    err = capsys.readouterr().err
    assert str(path) in err and "no secondary could transfer the zone" in err


@pytest.mark.parametrize(
    ("body", "target", "action"),
    [
        ("[rpz]\nipv4 = '192.0.2.80'", "kresd", "local"),  # cname: kresd gets local data
        ("[rpz]\nipv4 = '192.0.2.80'", "any", "cname"),
        ("[rpz]\n[rpz.export]\naction = 'nxdomain'", "kresd", "nxdomain"),
        ("[rpz]\naction = 'nodata'", "kresd", "nodata"),
    ],
)
def test_export_action_follows_the_target(
    tmp_path: Path, body: str, target: str, action: str
) -> None:
    config = load_rpz_config(write_toml(tmp_path, body))
    assert export_settings(config, target).action == action


def test_export_for_kresd_without_stop_page_address_is_refused(tmp_path: Path) -> None:
    config = load_rpz_config(write_toml(tmp_path, "[rpz]\naction = 'cname'"))
    with pytest.raises(ValueError, match=r"Knot Resolver ignores rpz\.action = 'cname'"):
        export_settings(config, "kresd")


def test_resolver_sections_may_share_the_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "[server]\nport = 53\n[upstream]\nservers = ['192.0.2.53']\n"
        "[rpz.transfer]\nunsigned_allow = ['127.0.0.1']\n",
    )
    config = load_rpz_config(path)
    assert config.rpz.transfer.unsigned_allow == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not base64 !!", "not a base64 secret"),
        ("c2hvcnQ=", "use at least 16"),
    ],
)
def test_tsig_secret_file_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = write_toml(tmp_path, "[rpz.transfer]\ntsig_secret_file = 'keys/rpz.key'\n")
    secret = tmp_path / "keys" / "rpz.key"
    if content is not None:
        secret.parent.mkdir()
        secret.write_text(content)
    config = load_rpz_config(path)
    assert config.rpz.transfer.tsig_secret_file == secret  # relative to the config file
    with pytest.raises(ConfigError) as info:
        load_tsig_key(config, str(path))
    text = str(info.value)
    assert str(path) in text and "rpz.transfer.tsig_secret_file" in text and str(secret) in text
    assert message in text


def test_tsig_key_loads(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnl0\n")
    data = {
        "sync": {"root_keys": [ROOT_PUB], "edition": "plain"},
        "rpz": {"transfer": {"tsig_secret_file": str(tmp_path / "k"), "tsig_key_name": "Xfer"}},
    }
    config = validate_config(data, RpzConfig, "t")
    key = load_tsig_key(config, "t")
    assert key is not None and key.name == dns.name.from_text("xfer.")
    assert key.algorithm == dns.tsig.HMAC_SHA256
