"""RPZ primary in-process on loopback, with dnspython as the secondary: TSIG, ACL, AXFR, IXFR
with and without history, SOA checks, refusals, NOTIFY retries, export, metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone
import pytest
from rpz_fixtures import ROOT_PUB, write_list
from rpz_waits import wait_refused, wait_serial
from test_rpz_units import records

from blocklist.config import ConfigError, validate_config
from resolver.rpz import cli, wire
from resolver.rpz.config import RpzConfig
from resolver.rpz.service import HashedEditionError, RpzService

ZONE = "rpz.cordon.example."
ORIGIN = dns.name.from_text(ZONE)
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEY = dns.tsig.Key("cordon-rpz.", SECRET, "hmac-sha256")
WRONG_SECRET = dns.tsig.Key("cordon-rpz.", base64.b64encode(b"x" * 32).decode(), "hmac-sha256")
WRONG_NAME = dns.tsig.Key("someone-else.", SECRET, "hmac-sha256")


def rpz_config(tmp_path: Path, **rpz: Any) -> RpzConfig:
    (tmp_path / "tsig.key").write_text(SECRET + "\n")
    transfer = {"tsig_secret_file": str(tmp_path / "tsig.key"), **rpz.pop("transfer", {})}
    data = {
        "sync": {"root_keys": [ROOT_PUB], "state_dir": str(tmp_path / "state"), "edition": "plain"},
        "rpz": {
            "zone": ZONE,
            "port": 0,
            "list_poll_interval": 0.05,
            "transfer": transfer,
            "metrics": {"port": 0},
            **rpz,
        },
    }
    return validate_config(data, RpzConfig, str(tmp_path / "rpz.toml"))


@contextlib.asynccontextmanager
async def serving(config: RpzConfig):
    service = RpzService(config, "rpz.toml")
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def expected_records(
    domains: list[str], serial: int, local: tuple[str, str] | None = None
) -> set[tuple[str, int, str, str]]:
    """The zone docs/rpz.md describes for the test config's defaults (action cname, TTL 60; or
    action local with these IPv4 and IPv6 addresses), written out here rather than rendered by
    the code under test."""
    out = {
        (ZONE, 60, "SOA", f"localhost. hostmaster.cordon.invalid. {serial} 300 60 2419200 60"),
        (ZONE, 60, "NS", "localhost."),
    }
    for name in domains:
        for owner in (f"{name}.{ZONE}", f"*.{name}.{ZONE}"):
            if local is None:
                out.add((owner, 60, "CNAME", "stop.isp.example."))
            else:
                out.add((owner, 60, "A", local[0]))
                out.add((owner, 60, "AAAA", local[1]))
    return out


async def transfer(
    port: int,
    zone: dns.zone.Zone | None = None,
    *,
    key: dns.tsig.Key | None = KEY,
    serial: int | None = None,
    source: str | None = None,
) -> dns.zone.Zone:
    """AXFR (serial None) or IXFR into `zone` with dnspython, as a secondary would."""
    if zone is None:
        zone = dns.zone.Zone(ORIGIN, relativize=False)
    query, _ = dns.xfr.make_query(zone, serial=serial, keyring=key)
    await dns.asyncquery.inbound_xfr("127.0.0.1", zone, query, port=port, timeout=5, source=source)
    return zone


async def ask(port: int, msg: dns.message.Message, source: str | None = None, **kw):
    return await dns.asyncquery.udp(msg, "127.0.0.1", port=port, timeout=3, source=source, **kw)


def sample(service: RpzService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"no metric {name}{labels}"
    return value


DOMAINS = ["blocked.example", "xn--bcher-kva.example", "cdn.other.test"]


# --------------------------------------------------------------------------------- transfers


async def test_axfr_needs_a_valid_tsig(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=7, urls=["shared.example/a"])
    async with serving(config) as svc:
        zone = await transfer(svc.port)
        assert records(zone) == expected_records(DOMAINS, 7)
        with pytest.raises(dns.xfr.TransferError) as info:
            await transfer(svc.port, key=None)
        assert info.value.rcode == dns.rcode.REFUSED
        with pytest.raises(dns.tsig.PeerBadSignature):
            await transfer(svc.port, key=WRONG_SECRET)
        with pytest.raises(dns.tsig.PeerBadKey):
            await transfer(svc.port, key=WRONG_NAME)
        with pytest.raises(dns.xfr.TransferError) as info:
            await transfer(svc.port, key=None, serial=6)  # IXFR is a transfer too
        assert info.value.rcode == dns.rcode.REFUSED
        assert sample(svc, "cordon_rpz_answers_total", kind="axfr") == 1
        assert sample(svc, "cordon_rpz_answers_total", kind="unsigned") == 2
        assert sample(svc, "cordon_rpz_answers_total", kind="tsig_badsig") == 1
        assert sample(svc, "cordon_rpz_answers_total", kind="tsig_badkey") == 1


async def test_large_zone_goes_out_in_many_signed_messages(tmp_path: Path) -> None:
    config = rpz_config(tmp_path, transfer={"message_size": 1024})
    domains = [f"site-{i}.blocked.example" for i in range(1500)]
    write_list(config.sync.state_dir, domains, serial=3)
    async with serving(config) as svc:
        zone = await transfer(svc.port)
        assert len(zone.nodes) == 1 + 2 * len(domains)
        assert records(zone) == expected_records(domains, 3)
        assert sample(svc, "cordon_rpz_transfer_messages_total", kind="axfr") > 50


async def test_ixfr_from_history_and_full_answer_past_a_gap(tmp_path: Path) -> None:
    config = rpz_config(tmp_path, history=2)
    state_dir = config.sync.state_dir
    lists = {
        1: ["a.example", "b.example"],
        2: ["a.example", "c.example"],
        3: ["c.example", "d.example"],
        4: ["d.example", "e.example", "f.example"],
        5: ["e.example"],
        6: ["e.example", "g.example"],
    }
    write_list(state_dir, lists[1], serial=1)
    async with serving(config) as svc:
        zone = await transfer(svc.port)
        assert zone.get_soa().serial == 1
        write_list(state_dir, lists[2], serial=2)
        await wait_serial(svc, 2)
        await transfer(svc.port, zone, serial=1)  # incremental
        assert records(zone) == expected_records(lists[2], 2)
        assert sample(svc, "cordon_rpz_answers_total", kind="ixfr") == 1
        for serial in (3, 4, 5):
            write_list(state_dir, lists[serial], serial=serial)
            await wait_serial(svc, serial)
        assert svc.responder.history.oldest_serial == 3  # 3->4 and 4->5 are kept
        await transfer(svc.port, zone, serial=2)  # 2 is older than the history: full answer
        assert records(zone) == expected_records(lists[5], 5)
        assert sample(svc, "cordon_rpz_answers_total", kind="ixfr_full") == 1
        write_list(state_dir, lists[6], serial=6)
        await wait_serial(svc, 6)
        await transfer(svc.port, zone, serial=5)
        assert records(zone) == expected_records(lists[6], 6)
        assert sample(svc, "cordon_rpz_answers_total", kind="ixfr") == 2
        await transfer(svc.port, zone, serial=6)  # up to date: the SOA alone
        assert sample(svc, "cordon_rpz_answers_total", kind="ixfr_current") == 1
        assert records(zone) == expected_records(lists[6], 6)


async def test_serial_that_does_not_advance_is_not_served(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, ["a.example"], serial=10)
    async with serving(config) as svc:
        write_list(config.sync.state_dir, ["b.example"], serial=9)
        await wait_refused(svc, 1)
        assert svc.current.list_serial == 10 and svc.current.values == ("a.example",)
        write_list(config.sync.state_dir, ["c.example"], serial=11)
        await wait_serial(svc, 11)
        assert svc.current.values == ("c.example",)


# ----------------------------------------------------------------------------- plain queries


async def test_soa_ns_and_refusals(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=4)
    async with serving(config) as svc:
        r = await ask(svc.port, dns.message.make_query(ZONE, "SOA"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert r.answer[0][0].serial == 4
        signed = dns.message.make_query(ZONE, "SOA")
        signed.use_tsig(KEY)
        r = await ask(svc.port, signed)  # dnspython checks the response's signature
        assert r.had_tsig and r.answer[0][0].serial == 4
        r = await ask(svc.port, dns.message.make_query(ZONE, "NS"))
        assert r.answer[0][0].target == dns.name.from_text("localhost.")
        r = await ask(svc.port, dns.message.make_query(ZONE, "A"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority
        for name in ("example.", "other.zone.example.", "blocked.example." + ZONE):
            r = await ask(svc.port, dns.message.make_query(name, "SOA"))
            assert r.rcode() == dns.rcode.REFUSED, name
        r = await ask(svc.port, dns.message.make_query(ZONE, "AXFR"))
        assert r.rcode() == dns.rcode.FORMERR
        ixfr, _ = dns.xfr.make_query(dns.zone.Zone(ORIGIN, relativize=False), serial=1)
        r = await ask(svc.port, ixfr)  # over UDP: the current SOA alone, "use TCP"
        assert len(r.answer) == 1 and r.answer[0][0].serial == 4
        note = dns.message.make_query(ZONE, "SOA")
        note.set_opcode(dns.opcode.NOTIFY)
        r = await ask(svc.port, note)
        assert r.rcode() == dns.rcode.NOTIMP
        # Garbage gets FORMERR or silence, never a crash; the server still answers after.
        loop = asyncio.get_running_loop()
        for junk in (b"\x00", b"\x12\x34" + b"\x00" * 10 + b"\xff" * 5, bytes(range(40))):
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", svc.port)
            )
            transport.sendto(junk)
            transport.close()
        r = await dns.asyncquery.tcp(
            dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=svc.port
        )
        assert r.answer[0][0].serial == 4


async def test_acl_and_unsigned_hosts(tmp_path: Path) -> None:
    config = rpz_config(
        tmp_path,
        transfer={
            "allow": ["127.0.0.2/32"],
            "allow_loopback": False,
            "unsigned_allow": ["127.0.0.3/32"],
        },
    )
    write_list(config.sync.state_dir, DOMAINS, serial=2)
    async with serving(config) as svc:
        soa = dns.message.make_query(ZONE, "SOA")
        assert (await ask(svc.port, soa, source="127.0.0.1")).rcode() == dns.rcode.REFUSED
        assert (await ask(svc.port, soa, source="127.0.0.2")).rcode() == dns.rcode.NOERROR
        with pytest.raises(dns.xfr.TransferError):
            await transfer(svc.port, source="127.0.0.1")  # outside the ACL, even signed
        await transfer(svc.port, source="127.0.0.2")
        with pytest.raises(dns.xfr.TransferError):
            await transfer(svc.port, key=None, source="127.0.0.2")
        zone = await transfer(svc.port, key=None, source="127.0.0.3")  # a host that cannot sign
        assert records(zone) == expected_records(DOMAINS, 2)
        assert sample(svc, "cordon_rpz_answers_total", kind="acl") == 2


async def test_servfail_until_a_list_exists(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    async with serving(config) as svc:
        r = await ask(svc.port, dns.message.make_query(ZONE, "SOA"))
        assert r.rcode() == dns.rcode.SERVFAIL  # secondaries keep what they have
        write_list(config.sync.state_dir, DOMAINS, serial=1)
        await wait_serial(svc, 1)
        r = await ask(svc.port, dns.message.make_query(ZONE, "SOA"))
        assert r.rcode() == dns.rcode.NOERROR


# ----------------------------------------------------------------------------- hashed lists


async def test_hashed_state_file_refuses_to_start(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=3, edition="hashed")
    service = RpzService(config, "/etc/cordon/rpz.toml")
    with pytest.raises(HashedEditionError) as info:
        await service.start()
    text = str(info.value)
    assert str(config.sync.state_dir / "state.bin") in text
    assert "hashed edition" in text and 'sync.edition = "plain"' in text
    assert "/etc/cordon/rpz.toml" in text
    await service.stop()


async def test_hashed_list_arriving_later_is_not_served(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=1)
    async with serving(config) as svc:
        write_list(config.sync.state_dir, DOMAINS, serial=2, edition="hashed")
        await wait_refused(svc, 1)
        assert svc.current.list_serial == 1 and len(svc.current) == 3


def test_cli_refuses_hashed_config_and_state(tmp_path: Path, capsys) -> None:
    toml = tmp_path / "rpz.toml"
    (tmp_path / "tsig.key").write_text(SECRET)
    body = f"""[sync]
root_keys = ["{ROOT_PUB}"]
edition = "EDITION"
state_dir = "state"
[rpz]
port = 0
[rpz.transfer]
tsig_secret_file = "tsig.key"
"""
    toml.write_text(body.replace("EDITION", "hashed"))
    assert cli.main(["export", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert str(toml) in err and "sync.edition" in err
    assert cli.main(["serve", "--config", str(toml)]) == 2
    toml.write_text(body.replace("EDITION", "plain"))
    write_list(tmp_path / "state", DOMAINS, serial=1, edition="hashed")
    assert cli.main(["export", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "state" / "state.bin") in err and "hashed edition" in err
    assert cli.main(["serve", "--config", str(toml), "--log-level", "critical"]) == 2
    assert "hashed edition" in capsys.readouterr().err


# ------------------------------------------------------------------------- export and keygen


def test_export_writes_a_private_zone_file_without_transfer_settings(
    tmp_path: Path, capsys
) -> None:
    config_path = tmp_path / "rpz.toml"
    config_path.write_text(
        f"""[sync]
root_keys = ["{ROOT_PUB}"]
edition = "plain"
state_dir = "state"
[rpz]
zone = "{ZONE}"
action = "local"
ipv4 = "192.0.2.80"
ipv6 = "2001:db8::80"
"""
    )
    write_list(tmp_path / "state", DOMAINS, serial=12, urls=["shared.example/a", "s.example/b"])
    out = tmp_path / "rpz.zone"
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        assert cli.main(["export", "--config", str(config_path), "--output", str(out)]) == 0
    finally:
        os.umask(old_umask)
    assert "2 list entries not expressible in RPZ" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    parsed = dns.zone.from_text(out.read_text(), origin=ORIGIN, relativize=False)
    serial_owner = dns.name.from_text("serial.cordon-rpz.invalid", ORIGIN)
    txt = parsed.get_rdataset(serial_owner, "TXT")
    assert txt is not None and [r.to_text() for r in txt] == ['"cordon list serial 12"']
    parsed.delete_node(serial_owner)
    assert records(parsed) == expected_records(DOMAINS, 12, local=("192.0.2.80", "2001:db8::80"))
    assert cli.main(["export", "--config", str(config_path)]) == 0  # to stdout
    assert "IN SOA" in capsys.readouterr().out


def test_export_for_kresd_never_writes_cname(tmp_path: Path, capsys) -> None:
    config_path = tmp_path / "rpz.toml"
    body = f"""[sync]
root_keys = ["{ROOT_PUB}"]
edition = "plain"
state_dir = "state"
[rpz]
zone = "{ZONE}"
action = "cname"
"""
    config_path.write_text(body)
    write_list(tmp_path / "state", DOMAINS, serial=3)
    out = tmp_path / "rpz.zone"
    argv = ["export", "--config", str(config_path), "--output", str(out), "--for", "kresd"]
    assert cli.main(argv) == 2  # no stop page address: nothing kresd could enforce
    err = capsys.readouterr().err
    assert str(config_path) in err and "Knot Resolver ignores rpz.action = 'cname'" in err
    assert not out.exists()
    config_path.write_text(body + 'ipv4 = "192.0.2.80"\n')
    assert cli.main(argv) == 0
    assert "action local" in capsys.readouterr().err
    text = out.read_text()
    assert " CNAME " not in text and "blocked.example 60 IN A 192.0.2.80" in text
    # Without --for the same configuration exports the CNAME zone for other resolvers.
    assert cli.main(argv[:-2]) == 0
    assert "blocked.example 60 IN CNAME stop.isp.example." in out.read_text()


def test_export_without_a_list_says_so(tmp_path: Path, capsys) -> None:
    config_path = tmp_path / "rpz.toml"
    config_path.write_text(
        f'[sync]\nroot_keys = ["{ROOT_PUB}"]\nedition = "plain"\nstate_dir = "nowhere"\n'
        '[rpz.transfer]\nunsigned_allow = ["127.0.0.1"]\n'
    )
    assert cli.main(["export", "--config", str(config_path)]) == 2
    assert "no verified list yet" in capsys.readouterr().err


def test_keygen_writes_a_private_secret_once(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rpz-tsig.key"
    assert cli.main(["keygen", "--output", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(base64.b64decode(out.read_text().strip())) == 32
    assert 'key "cordon-rpz." { algorithm hmac-sha256; secret "' in capsys.readouterr().out
    assert cli.main(["keygen", "--output", str(out)]) == 1


def test_config_error_from_the_cli_names_file_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "rpz.toml"
    path.write_text(
        f'[sync]\nroot_keys = ["{ROOT_PUB}"]\nedition = "plain"\n[rpz]\nport = 99999\n'
        '[rpz.transfer]\nunsigned_allow = ["127.0.0.1"]\n'
    )
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert f"{path}: rpz.port" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        validate_config({"sync": {"root_keys": [ROOT_PUB]}}, RpzConfig, "t")


# ---------------------------------------------------------------------------- NOTIFY, metrics


class FakeSecondary(asyncio.DatagramProtocol):
    """Drops the first `drop` NOTIFYs, then acknowledges."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen: list[dns.message.Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        msg = dns.message.from_wire(data)
        self.seen.append(msg)
        if len(self.seen) <= self.drop:
            return
        reply = dns.message.make_response(msg)
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


async def test_notify_is_retried_until_acknowledged(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    patient = FakeSecondary(drop=2)
    t1, _ = await loop.create_datagram_endpoint(lambda: patient, local_addr=("127.0.0.1", 0))
    silent = FakeSecondary(drop=1000)
    t2, _ = await loop.create_datagram_endpoint(lambda: silent, local_addr=("127.0.0.1", 0))
    targets = [f"127.0.0.1:{t.get_extra_info('sockname')[1]}" for t in (t1, t2)]
    config = rpz_config(tmp_path, notify={"targets": targets, "timeout": 0.1, "retries": 3})
    write_list(config.sync.state_dir, DOMAINS, serial=5)
    try:
        async with serving(config) as svc:
            await svc.notifier.wait()
            assert len(patient.seen) == 3 and len(silent.seen) == 4
            for msg in patient.seen + silent.seen:
                assert msg.opcode() == dns.opcode.NOTIFY and msg.question[0].name == ORIGIN
                assert msg.answer[0][0].serial == 5
            assert sample(svc, "cordon_rpz_notify_total", target=targets[0], result="acked") == 1
            assert (
                sample(svc, "cordon_rpz_notify_total", target=targets[1], result="unanswered") == 1
            )
            patient.seen.clear()
            write_list(config.sync.state_dir, DOMAINS[:1], serial=6)
            await wait_serial(svc, 6)
            await svc.notifier.wait()
            assert patient.seen and patient.seen[-1].answer[0][0].serial == 6
    finally:
        t1.close()
        t2.close()


async def test_metrics_and_health(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=8, urls=["shared.example/a", "u.test/b"])
    async with serving(config) as svc:

        def get(path: str) -> tuple[int, str]:
            url = f"http://127.0.0.1:{svc.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()

        status, text = await asyncio.to_thread(get, "/metrics")
        assert status == 200
        assert 'cordon_rpz_skipped_entries{reason="url"} 2.0' in text
        assert "cordon_rpz_zone_serial 8.0" in text and "cordon_rpz_zone_entries 3.0" in text
        status, text = await asyncio.to_thread(get, "/healthz")
        assert status == 200 and '"serial": 8' in text


async def test_tsig_with_a_skewed_clock_gets_badtime(tmp_path: Path) -> None:
    config = rpz_config(tmp_path)
    write_list(config.sync.state_dir, DOMAINS, serial=2)
    async with serving(config) as svc:
        query = dns.message.make_query(ZONE, "SOA")
        unsigned = query.to_wire()
        then = int(time.time()) - 3600  # an hour off: beyond the 300 s fudge
        rdata, _ = dns.tsig.sign(
            unsigned, KEY, wire.tsig_rdata(KEY, query.id, now=then), then, None, None, False
        )
        signed = wire.append_tsig(unsigned, KEY.name, rdata)
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr) -> None:
                got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", svc.port)
        )
        try:
            transport.sendto(signed)
            reply = dns.message.from_wire(await asyncio.wait_for(got, 3), keyring=False)
        finally:
            transport.close()
        assert reply.rcode() == dns.rcode.NOTAUTH
        assert reply.tsig[0].error == dns.rcode.BADTIME
        assert reply.tsig[0].mac  # signed, so the client can trust the error
        assert sample(svc, "cordon_rpz_answers_total", kind="tsig_badtime") == 1
