"""The `blocklist` command end to end: real processes, a real authority API on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blocklist import cli

REPO = Path(__file__).resolve().parent.parent
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CORDON_") and k not in PROXY_VARS
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def write_config(directory: Path, port: int, extra: str = "") -> Path:
    path = directory / "authority.toml"
    path.write_text(
        f"""
[authority]
name = "Demo Authority"
list_id = "demo"
state_dir = "state"

[api]
host = "127.0.0.1"
port = {port}

[rails]
protected_names = ["www.protected.example"]
{extra}
""",
        encoding="utf-8",
    )
    return path


def blocklist(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blocklist.cli", *map(str, args)],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Authority:
    directory: Path
    config: Path
    url: str
    root_key: str
    admin: str
    tokens: dict[str, str] = field(default_factory=dict)

    def run(
        self, *args: str | Path, token: str | None = None, who: str | None = None
    ) -> subprocess.CompletedProcess:
        token = token or self.tokens[who or "admin"]
        env = clean_env(CORDON_URL=self.url, CORDON_TOKEN=token)
        return blocklist(*args, cwd=self.directory, env=env)

    def json(self, *args: str | Path, who: str | None = None) -> dict:
        out = self.run("--json", *args, who=who)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"blocklist serve exited with {proc.returncode}: {log.read_text()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"blocklist serve did not answer /healthz: {log.read_text()}")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("authority")
    port = free_port()
    config = write_config(directory, port)
    token_file = directory / "admin.token"
    init = blocklist(
        "init", "--config", config, "--admin", "root", "--token-out", token_file, cwd=directory
    )
    assert init.returncode == 0, init.stderr
    root_key = next(w for w in init.stdout.split() if w.startswith("ed25519:"))
    admin = token_file.read_text().strip()
    log = directory / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blocklist.cli", "serve", "--config", str(config)],
            cwd=directory,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        auth = Authority(directory, config, url, root_key, admin, {"admin": admin})
        # Oversight offline, on the state directory: independent of the admin, so it can
        # confirm the approver the admin creates.
        offline = blocklist(
            "--json",
            "officer",
            "add",
            "olga",
            "--role",
            "oversight",
            "--config",
            config,
            cwd=directory,
        )
        assert offline.returncode == 0, offline.stderr
        auth.tokens["olga"] = json.loads(offline.stdout)["token"]
        for name, role in [("alice", "officer"), ("bob", "approver")]:
            created = auth.json("officer", "add", name, "--role", role)
            assert created["name"] == name and created["role"] == role
            auth.tokens[name] = created["token"]
        assert auth.json("officer", "confirm", "bob", who="olga")["active"] is True
        yield auth
    finally:
        proc.kill()
        proc.wait(timeout=10)


def add_entry(auth: Authority, value: str, who: str = "alice", country: str = "NL") -> int:
    out = auth.json("add", value, "--country", country, "--evidence", "case-1", who=who)
    assert out["status"] == "pending"
    return out["id"]


# ---------------------------------------------------------------- init


def test_init_prints_root_key_and_writes_token_0600(authority: Authority) -> None:
    assert authority.root_key.startswith("ed25519:")
    token_file = authority.directory / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert authority.admin.startswith("cdn_")
    keys = authority.directory / "state" / "keys"
    assert (keys / "root.pub").read_text().strip() == authority.root_key


def test_init_refuses_when_already_initialised(authority: Authority) -> None:
    again = blocklist(
        "init", "--config", authority.config, "--admin", "other", cwd=authority.directory
    )
    assert again.returncode == 1
    assert "already initialised" in again.stderr
    assert "cdn_" not in again.stdout


def test_init_shows_token_once_and_refuses_existing_officers(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    out = blocklist("--json", "init", "--config", config, "--admin", "root", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["token"].startswith("cdn_") and data["root_public_key"].startswith("ed25519:")
    # Keys gone but officers still there: still refused, nothing overwritten.
    for key in (tmp_path / "state" / "keys").iterdir():
        key.unlink()
    again = blocklist("init", "--config", config, "--admin", "root2", cwd=tmp_path)
    assert again.returncode == 1 and "officers exist" in again.stderr
    assert not (tmp_path / "state" / "keys" / "root.pub").exists()


def test_init_refuses_a_bad_admin_name_without_leaving_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    out = blocklist("init", "--config", config, "--admin", "bad name!", cwd=tmp_path)
    assert out.returncode == 2
    assert "officer name" in out.stderr
    assert not (tmp_path / "state" / "keys").exists()


# ---------------------------------------------------------------- the officers' flow


def test_add_approve_publish_status_list_show(authority: Authority) -> None:
    added = authority.run(
        "add", "blocked-demo.test", "--country", "nl", "--evidence", "case-42", who="alice"
    )
    assert added.returncode == 0, added.stderr
    assert "blocked-demo.test" in added.stdout and "pending" in added.stdout
    entry = authority.json("list", "--search", "blocked-demo.test", who="alice")["entries"]
    assert len(entry) == 1
    entry_id = entry[0]["id"]

    # An officer may not approve at all; the approver may.
    refused = authority.run("approve", str(entry_id), who="alice")
    assert refused.returncode == 1 and "may not approve" in refused.stderr
    approved = authority.run("approve", str(entry_id), who="bob")
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout and "active" in approved.stdout

    published = authority.run("publish", who="alice")
    assert published.returncode == 0, published.stderr
    # The authority is shared by this module's tests, which run in any order.
    serial = int(re.search(r"Published serial (\d+)", published.stdout).group(1))
    again = authority.json("publish", who="alice")
    assert again["serial"] == serial and again["changed"] is False

    status = authority.run("status", who="olga")
    assert status.returncode == 0, status.stderr
    assert any(line.split() == ["serial", str(serial)] for line in status.stdout.splitlines())
    assert any(line.split() == ["list", "id", "demo"] for line in status.stdout.splitlines())
    assert authority.json("status", who="olga")["serial"] == serial

    listing = authority.run("list", "--status", "active", who="olga")
    assert listing.returncode == 0, listing.stderr
    header, rule, *rows = listing.stdout.splitlines()
    assert header.split()[:4] == ["id", "status", "kind", "value"]
    assert set(rule.replace(" ", "")) == {"-"}
    row = next(r for r in rows if "blocked-demo.test" in r)
    assert row.split()[:5] == [str(entry_id), "active", "domain", "blocked-demo.test", "NL"]
    # Columns line up under their headers.
    assert header.index("value") == row.index("blocked-demo.test")

    shown = authority.run("show", str(entry_id), who="olga")
    assert shown.returncode == 0, shown.stderr
    fields = {
        k.strip(): v.strip() for k, v in (line.split("  ", 1) for line in shown.stdout.splitlines())
    }
    assert fields["value"] == "blocked-demo.test"
    assert fields["evidence"] == "case-42"
    assert fields["approved by"] == "bob"
    assert fields["listed in serial"] == str(serial)
    assert fields["created"].endswith("Z")

    # An ASP applies the serial just published and acknowledges it; compliance shows it.
    asp = authority.json("asp", "add", "isp-one.example")
    status_json = authority.json("status", who="olga")
    ack = urllib.request.Request(
        authority.url + "/v1/acks",
        data=json.dumps(
            {"instance": "resolver-1", "serial": serial, "checksum": status_json["checksum"]}
        ).encode(),
        headers={"Authorization": f"Bearer {asp['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(ack, timeout=10) as resp:
        assert resp.status == 200
    compliance = authority.run("compliance", who="olga")
    assert compliance.returncode == 0, compliance.stderr
    header = compliance.stdout.splitlines()[1]
    assert header.split() == [
        "asp",
        "instance",
        "serial",
        "lag",
        "divergent",
        "overdue",
        "held",
        "alarms",
        "last",
        "seen",
    ]
    row = next(r for r in compliance.stdout.splitlines() if "resolver-1" in r).split()
    assert row[:8] == ["isp-one.example", "resolver-1", str(serial), "0", "no", "no", "0", "-"]
    assert row[8].endswith("Z") and "T" in row[8]


def test_self_approval_is_refused(authority: Authority) -> None:
    entry_id = add_entry(authority, "self-approved.example", who="bob")
    out = authority.run("approve", str(entry_id), who="bob")
    assert out.returncode == 1
    assert out.stderr.startswith("error: ")
    assert "another approver" in out.stderr
    shown = authority.json("show", str(entry_id), who="olga")
    assert shown["status"] == "pending"


def test_reject_and_delist_need_reasons_and_are_logged(authority: Authority) -> None:
    rejected_id = add_entry(authority, "rejected-demo.example")
    out = authority.run("reject", str(rejected_id), "--reason", "not CSAM", who="bob")
    assert out.returncode == 0, out.stderr
    assert "rejected" in out.stdout
    missing = authority.run("reject", str(rejected_id), who="bob")
    assert missing.returncode == 2 and "--reason" in missing.stderr

    delisted_id = add_entry(authority, "delisted-demo.example")
    assert authority.run("approve", str(delisted_id), who="bob").returncode == 0
    out = authority.run("delist", str(delisted_id), "--reason", "removed at source", who="alice")
    assert out.returncode == 0, out.stderr
    out = authority.run("delist", "confirm", str(delisted_id), who="bob")
    assert out.returncode == 0, out.stderr
    assert authority.json("show", str(delisted_id), who="olga")["status"] == "delisted"

    log = authority.run("audit", "log", "--entry", str(delisted_id), who="olga")
    assert log.returncode == 0, log.stderr
    assert "entry.delist" in log.stdout and "removed at source" in log.stdout
    assert "entry.approve" in log.stdout


def test_delisting_is_requested_then_confirmed_by_another_approver(authority: Authority) -> None:
    entry = add_entry(authority, "two-people.example")
    assert authority.run("approve", str(entry), who="bob").returncode == 0
    out = authority.run("delist", str(entry), "--reason", "owner removed it", who="alice")
    assert out.returncode == 0, out.stderr
    assert "stays active (blocked) until another approver confirms" in out.stdout
    assert f"blocklist delist confirm {entry}" in out.stdout
    assert re.search(r"delistings to confirm +1\n", authority.run("status", who="olga").stdout)
    pending = authority.run("list", "--status", "delist_pending", who="olga")
    assert "active (delist requested)" in pending.stdout, pending.stdout + pending.stderr
    shown = authority.run("show", str(entry), who="olga").stdout
    assert "alice (awaiting confirmation by another approver)" in shown
    # Refusals: oversight, no reason to reject, bad usage.
    out = authority.run("delist", "confirm", str(entry), who="olga")
    assert out.returncode == 1 and out.stderr.startswith("error: ")
    out = authority.run("delist", "reject", str(entry), who="bob")
    assert out.returncode == 2 and "--reason" in out.stderr
    for bad in (
        ["delist", "confirm"],
        ["delist", "approve", "3"],
        ["delist", "0", "--reason", "x"],
    ):
        out = authority.run(*bad, who="bob")
        assert out.returncode == 2 and "usage: blocklist delist" in out.stderr, out.stderr
    out = authority.run("delist", "reject", str(entry), "--reason", "still online", who="bob")
    assert out.returncode == 0 and "stays active" in out.stdout, out.stderr
    assert authority.run("delist", str(entry), "--reason", "gone now", who="alice").returncode == 0
    out = authority.run("delist", "confirm", str(entry), who="bob")
    assert out.returncode == 0 and "requested by alice" in out.stdout, out.stderr
    shown = authority.json("show", str(entry), who="olga")
    assert (shown["status"], shown["delisted_by"]) == ("delisted", "bob")
    out = authority.run("delist", "confirm", str(entry), who="bob")
    assert out.returncode == 1 and "no delisting awaiting confirmation" in out.stderr


def test_errors_from_the_api_are_one_line(authority: Authority) -> None:
    missing = authority.run("show", "999999", who="olga")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: entry 999999 does not exist"
    as_json = authority.run("--json", "show", "999999", who="olga")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"] == "not_found"

    bad = authority.run("add", "co.uk", "--country", "GB", "--evidence", "x", who="alice")
    assert bad.returncode == 1 and "public suffix" in bad.stderr
    bad_country = authority.run(
        "add", "country-demo.example", "--country", "ZZ", "--evidence", "x", who="alice"
    )
    assert bad_country.returncode == 1 and "ISO 3166-1" in bad_country.stderr
    forbidden = authority.run("officer", "add", "mallory", "--role", "admin", who="olga")
    assert forbidden.returncode == 1 and "may not create" in forbidden.stderr


def test_wrong_or_missing_token_gives_the_hint(authority: Authority) -> None:
    out = authority.run("status", token="cdn_wrong")
    assert out.returncode == 1
    assert "error: a valid bearer token is required" in out.stderr
    assert "CORDON_TOKEN" in out.stderr
    none = blocklist("--url", authority.url, "list", cwd=authority.directory)
    assert none.returncode == 1 and "CORDON_TOKEN" in none.stderr


def test_token_file_and_options_after_the_command(authority: Authority) -> None:
    token_file = authority.directory / "olga.token"
    token_file.write_text("\n  " + authority.tokens["olga"] + "  \n")
    env = clean_env(CORDON_TOKEN_FILE=str(token_file))
    out = blocklist("status", "--url", authority.url, "--json", cwd=authority.directory, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["list_id"] == "demo"
    empty = authority.directory / "empty.token"
    empty.write_text("\n")
    out = blocklist(
        "--url", authority.url, "--token-file", empty, "status", cwd=authority.directory
    )
    assert out.returncode == 2 and "empty" in out.stderr


def test_unreachable_authority(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = blocklist("--url", url, "--token", "cdn_x", "status", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot reach the authority at {url}: ")
    assert len(out.stderr.strip().splitlines()) == 1


def test_officers_and_asps(authority: Authority) -> None:
    listing = authority.run("officer", "list", who="olga")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[2:]]
    assert ["root", "admin"] in [r[1:3] for r in rows]
    assert ["bob", "approver"] in [r[1:3] for r in rows]

    token_out = authority.directory / "isp-plain.token"
    out = authority.run("asp", "add", "isp-plain.example", "--plain", "--token-out", token_out)
    assert out.returncode == 0, out.stderr
    assert "cdn_" not in out.stdout and str(token_out) in out.stdout
    assert stat.S_IMODE(token_out.stat().st_mode) == 0o600
    shown = authority.run("asp", "add", "isp-shown.example")
    assert shown.returncode == 0 and "cdn_" in shown.stdout
    asps = authority.run("asp", "list", who="olga")
    assert asps.returncode == 0, asps.stderr
    editions = {r.split()[1]: r.split()[2] for r in asps.stdout.splitlines()[2:]}
    assert editions["isp-plain.example"] == "plain"
    assert editions["isp-shown.example"] == "hashed"
    dup = authority.run("asp", "add", "isp-shown.example")
    assert dup.returncode == 1 and "already exists" in dup.stderr


# ---------------------------------------------------------------- import and batches


def refused_rows(stdout: str) -> dict[int, list[str]]:
    """line number -> [input, reason] from the refused-lines table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["line", "input"])
    out = {}
    for line in lines[start + 2 :]:
        parts = line.split()
        out[int(parts[0])] = parts[1:3]
    return out


def test_import_csv_reports_bad_lines_and_batch_needs_confirmation(
    authority: Authority,
) -> None:
    csv_file = authority.directory / "import.csv"
    csv_file.write_text(
        "value,kind,hosting_country,evidence,category,notes\n"  # 1
        "csv-one.example,,NL,ev-1,,\n"  # 2
        "co.uk,,GB,ev-2,,\n"  # 3 public suffix
        "192.0.2.1,,NL,ev-3,,\n"  # 4 IP
        "csv-two.example,,ZZ,ev-4,,\n"  # 5 not a country (API)
        "csv-three.example,,France,ev-5,,\n"  # 6 not a code (local)
        ",,NL,ev-6,,\n"  # 7 no value
        "\n"  # 8 blank
        'https://share.example/csv/path,url,US,ev-7,csam,"a note, with a comma"\n'  # 9
        "csv-one.example,,NL,ev-8,,\n"  # 10 repeats line 2
        "csv-four.example,,,,,\n"  # 11 country and evidence from the options
        "www.protected.example,,NL,ev-9,,\n"  # 12 protected
        "csv-five.example,,NL,ev-10,,,extra\n",  # 13 too many fields
        encoding="utf-8",
    )
    out = authority.run(
        "import", csv_file, "--country", "DE", "--evidence", "ev-default", who="alice"
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("Batch ") and "3 of 11 lines accepted" in first
    batch_id = int(first.split()[1].rstrip(":"))
    rows = refused_rows(out.stdout)
    assert rows == {
        3: ["co.uk", "public_suffix"],
        4: ["192.0.2.1", "ip_literal"],
        5: ["csv-two.example", "invalid_country"],
        6: ["csv-three.example", "invalid_country"],
        7: [",,NL,ev-6,,", "missing_value"],
        10: ["csv-one.example", "duplicate"],
        12: ["www.protected.example", "protected_name"],
        13: ["csv-five.example", "extra_fields"],
    }

    batch = authority.json("batch", "show", str(batch_id), who="olga")
    assert batch["status"] == "pending" and batch["size"] == 3
    four = authority.json("list", "--search", "csv-four", who="olga")["entries"][0]
    assert four["hosting_country"] == "DE" and four["evidence"] == "ev-default"
    url = authority.json("list", "--search", "share.example/csv", who="olga")["entries"][0]
    assert url["kind"] == "url" and url["notes"] == "a note, with a comma"

    # The importer may not accept its own batch; a large batch needs confirmation.
    own = authority.run("batch", "accept", str(batch_id), who="alice")
    assert own.returncode == 1
    large = authority.run("batch", "accept", str(batch_id), who="bob")
    assert large.returncode == 1
    assert "confirm" in large.stderr and "--confirm-large" in large.stderr
    accepted = authority.run("batch", "accept", str(batch_id), "--confirm-large", who="bob")
    assert accepted.returncode == 0, accepted.stderr
    assert f"Batch {batch_id} accepted: 3 entries" in accepted.stdout
    shown = authority.run("batch", "show", str(batch_id), who="olga")
    assert shown.returncode == 0 and "accepted" in shown.stdout
    assert authority.json("show", str(four["id"]), who="olga")["status"] == "active"


def test_import_text_with_comments_and_reject_the_batch(authority: Authority) -> None:
    text_file = authority.directory / "list.txt"
    text_file.write_bytes(
        b"# exported from the case system\n"  # 1
        b"\n"  # 2
        b"text-one.example\n"  # 3
        b"  *.text-two.example  \n"  # 4
        b"co.uk\n"  # 5
        b"192.0.2.1\n"  # 6
        b"\xff\xfe-bad.example\n"  # 7
        b"https://share.example/text/path\n"  # 8
    )
    no_defaults = authority.run("import", text_file, who="alice")
    assert no_defaults.returncode == 2
    assert "--country" in no_defaults.stderr and "--evidence" in no_defaults.stderr

    out = authority.run(
        "--json",
        "import",
        text_file,
        "--country",
        "NL",
        "--evidence",
        "ev-text",
        "--source",
        "case-system",
        who="alice",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["accepted"] == 3
    assert {r["line"]: r["reason"] for r in report["refused"]} == {
        5: "public_suffix",
        6: "ip_literal",
        7: "not_utf8",
    }
    batch = authority.json("batch", "show", str(report["batch_id"]), who="olga")
    assert batch["source"] == "case-system"

    # Importing the same file again: every line is a duplicate, nothing accepted.
    again = authority.run(
        "import", text_file, "--country", "NL", "--evidence", "ev-text", who="alice"
    )
    assert again.returncode == 1
    assert "nothing was accepted" in again.stderr
    assert refused_rows(again.stdout)[3] == ["text-one.example", "duplicate"]

    rejected = authority.run(
        "batch", "reject", str(report["batch_id"]), "--reason", "wrong case", who="bob"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected" in rejected.stdout
    entries = authority.json("list", "--search", "text-one", who="olga")["entries"]
    assert [e["status"] for e in entries] == ["rejected"]


def test_import_file_problems(authority: Authority) -> None:
    bad_header = authority.directory / "bad.csv"
    bad_header.write_text("value,country,evidance\nx.example,NL,e\n")
    out = authority.run("import", bad_header, who="alice")
    assert out.returncode == 2
    assert "line 1" in out.stderr and "'country'" in out.stderr and "'evidance'" in out.stderr
    missing = authority.run("import", authority.directory / "nope.csv", who="alice")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    only_bad = authority.directory / "only-bad.csv"
    only_bad.write_text("value,hosting_country,evidence\nonly-bad.example,,e\n")
    out = authority.run("import", only_bad, who="alice")
    assert out.returncode == 1 and "nothing was accepted" in out.stderr
    assert refused_rows(out.stdout) == {2: ["only-bad.example", "missing_country"]}


# ---------------------------------------------------------------- audit


def test_audit_verify_offline_and_through_the_api(authority: Authority) -> None:
    offline = blocklist("audit", "verify", "--config", authority.config, cwd=authority.directory)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith("audit chain ok: ")
    online = authority.json("audit", "verify", who="olga")
    assert online["ok"] is True and online["records"] >= 4


def test_audit_verify_finds_an_altered_record(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    init = blocklist("init", "--config", config, "--admin", "root", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    conn = sqlite3.connect(tmp_path / "state" / "authority.db")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 1")
    conn.commit()
    conn.close()
    out = blocklist("audit", "verify", "--config", config, cwd=tmp_path)
    assert out.returncode == 1
    assert "record 1 was altered" in out.stderr


def test_audit_verify_offline_needs_an_initialised_state(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    out = blocklist("audit", "verify", "--config", config, cwd=tmp_path)
    assert out.returncode == 2 and "not initialised" in out.stderr
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "authority.db").write_bytes(b"not a database, just text" * 100)
    out = blocklist("audit", "verify", "--config", config, cwd=tmp_path)
    assert out.returncode == 1 and "cannot open the database" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- configuration and help


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[compliance]\ndeadline_hours = "soon"\n', "compliance.deadline_hours"),
        ("bogus = 1\n", "rails.bogus: unknown key"),  # lands in the [rails] table
        ("[apii]\nport = 1\n", "apii: unknown key"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, extra: str, expected: str) -> None:
    config = write_config(tmp_path, free_port(), extra)
    for command in (["init", "--admin", "root"], ["serve"], ["audit", "verify"]):
        out = blocklist(*command, "--config", config, cwd=tmp_path)
        assert out.returncode == 2, (command, out.stderr)
        assert str(config) in out.stderr and expected in out.stderr
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "state").exists()


def test_config_error_on_a_bad_port(tmp_path: Path) -> None:
    config = tmp_path / "authority.toml"
    config.write_text('[api]\nport = "x"\n')
    out = blocklist("init", "--config", config, "--admin", "root", cwd=tmp_path)
    assert out.returncode == 2
    assert f"{config}: api.port:" in out.stderr
    assert not (tmp_path / "authority-state").exists()
    missing = blocklist("serve", "--config", tmp_path / "nope.toml", cwd=tmp_path)
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr


def test_serve_refuses_an_uninitialised_state(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    out = blocklist("serve", "--config", config, cwd=tmp_path)
    assert out.returncode == 2 and "blocklist init" in out.stderr


def command_paths(parser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name, sub in choices.items():
                paths += command_paths(sub, (*prefix, name))
    return paths


def test_help_for_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    paths = command_paths(cli.build_parser())
    assert ("batch", "accept") in paths and ("audit", "verify") in paths
    assert len(paths) > 25
    for path in paths:
        with pytest.raises(SystemExit) as exc:
            cli.main([*path, "--help"])
        assert exc.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: blocklist"), path
        # The one-line description follows the usage.
        description = out.split("\n\n")[1].strip()
        assert description and "\n" not in description, (path, description)


def test_help_as_a_process(tmp_path: Path) -> None:
    out = blocklist("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("init", "serve", "import", "batch", "compliance", "audit"):
        assert command in out.stdout
    usage = blocklist("frobnicate", cwd=tmp_path)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_table_widths_come_from_content() -> None:
    text = cli.table(["a", "long header"], [[1, None], ["wider value", True]])
    assert text.splitlines() == [
        "a            long header",
        "-----------  -----------",
        "1            -",
        "wider value  yes",
    ]


def test_token_never_in_the_serve_log(authority: Authority) -> None:
    log = (authority.directory / "serve.log").read_text()
    for token in authority.tokens.values():
        assert token not in log
        assert hashlib.sha256(token.encode()).hexdigest() not in log


def test_complaints_list_show_decide(authority: Authority) -> None:
    entry = add_entry(authority, "complained-about.example")
    assert authority.run("approve", str(entry), who="bob").returncode == 0
    asp = authority.json("asp", "add", "isp-complaints.example")
    body = json.dumps(
        {
            "idempotency_key": "cli-test-key-0001",
            "entry_id": entry,
            "host": "complained-about.example",
            "role": "site_owner",
            "reason": "The site changed hands.",
            "received": int(time.time()),
        }
    ).encode()
    request = urllib.request.Request(
        authority.url + "/v1/complaints",
        data=body,
        headers={"Authorization": f"Bearer {asp['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        cid = json.loads(resp.read())["complaint_id"]
    listing = authority.run("complaints", "list", "--status", "received", who="olga")
    assert listing.returncode == 0 and cid in listing.stdout
    shown = authority.run("complaints", "show", cid, who="olga")
    assert "The site changed hands." in shown.stdout
    # alice added the entry and bob approved it: neither may decide.
    for who in ("alice", "bob"):
        out = authority.run("complaints", "decide", cid, "upheld", "--reasons", "x", who=who)
        assert out.returncode == 1 and "another officer must decide" in out.stderr
    out = authority.run("complaints", "decide", cid, "upheld", "--reasons", "Checked: gone.")
    assert out.returncode == 0, out.stderr
    assert f"Entry {entry} is delisted" in out.stdout
    assert authority.json("show", str(entry), who="olga")["status"] == "delisted"


def test_lifecycle_commands(authority: Authority) -> None:
    added = authority.json(
        "add", "hosted-at-home.example", "--country", "FR", "--evidence", "c-2", who="alice"
    )
    home = added["id"]
    assert added["status"] == "takedown"  # hosted in the authority's country: taken down
    out = authority.run("takedown", str(home), "--recipient", "abuse@host.example")
    assert out.returncode == 0 and "deadline" in out.stdout, out.stderr
    out = authority.run("escalate", str(home), "--reason", "still up")
    assert out.returncode == 1 and "deadline" in out.stderr
    abroad = add_entry(authority, "hosted-abroad.example")
    assert authority.run("approve", str(abroad), who="bob").returncode == 0
    out = authority.run("partner-notice", str(abroad), "--partner", "Hotline NL", who="alice")
    assert out.returncode == 0, out.stderr
    out = authority.run("reverify", str(abroad), "--note", "checked", who="alice")
    assert out.returncode == 0 and "next review" in out.stdout
    assert "No checks yet." in authority.run("checks", str(abroad), who="olga").stdout
    assert "No entry is past its review date." in authority.run("review", who="olga").stdout
    report = authority.run("report", who="olga")
    assert report.returncode == 0 and "Entries by status" in report.stdout
    assert "hosted-abroad.example" not in report.stdout


def test_keys_renew(authority: Authority) -> None:
    chain = authority.directory / "state" / "keys" / "chain.txt"
    before = chain.read_text()
    out = blocklist(
        "keys", "renew", "--config", authority.config, "--days", "30", cwd=authority.directory
    )
    assert out.returncode == 0, out.stderr
    assert "New signing key certified until" in out.stdout
    assert chain.read_text() != before
    bad = blocklist(
        "keys",
        "renew",
        "--config",
        authority.config,
        "--root-key",
        authority.directory / "nope.key",
        cwd=authority.directory,
    )
    assert bad.returncode == 2 and "nope.key does not exist" in bad.stderr


def test_keys_two_of_three_roots_revoke_recover_and_rotate(tmp_path: Path) -> None:
    """The key commands end to end: a 2-of-3 root ceremony, renewal with one root refused, a
    revocation with a recovery session, a root rotation; `keys show` reports each step."""
    config = write_config(tmp_path, free_port())
    out = blocklist(
        "--json", "init", "--config", config, "--admin", "root", "--roots", "3",
        "--threshold", "2", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    init = json.loads(out.stdout)
    assert len(init["root_public_keys"]) == 3 and init["root_threshold"] == 2
    keys = tmp_path / "state" / "keys"
    offline = tmp_path / "offline"
    offline.mkdir()
    for k in sorted(keys.glob("root*.key")):
        k.rename(offline / k.name)  # as in production: root keys leave the state directory
    roots = sorted(offline.glob("root*.key"))
    assert len(roots) == 3

    def show() -> dict:
        out = blocklist("--json", "keys", "show", "--config", config, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = show()
    assert first["root_threshold"] == 2 and first["keyset_version"] == 1
    old_id = first["signing_keys"][0]["key_id"]

    no_root = blocklist("keys", "renew", "--config", config, cwd=tmp_path)
    assert no_root.returncode == 2 and "--root-key" in no_root.stderr
    one = blocklist("keys", "renew", "--config", config, "--root-key", roots[0], cwd=tmp_path)
    assert one.returncode == 1 and "cannot certify" in one.stderr
    assert show()["keyset_version"] == 1  # nothing written by the refused renewal

    args = ["--config", config, "--root-key", roots[0], "--root-key", roots[2]]
    out = blocklist("--json", "keys", "revoke", *args, "--recover", old_id, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    revoked = json.loads(out.stdout)
    assert revoked["revoked"] == [old_id] and revoked["recover_session"]
    after = show()
    assert after["keyset_version"] == 2 and after["revoked"] == [old_id]
    assert old_id not in [k["key_id"] for k in after["signing_keys"]]
    assert after["recover_session"] == revoked["recover_session"]

    bad = blocklist("keys", "revoke", *args, "not-a-key-id", cwd=tmp_path)
    assert bad.returncode == 1 and "16-hex-digit key id" in bad.stderr

    out = blocklist(
        "--json", "keys", "rotate-root", *args, "--roots", "1", "--threshold", "1", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    pins = json.loads(out.stdout)["root_public_keys"]
    rotated = show()
    assert rotated["root_version"] == 2 and rotated["root_public_keys"] == pins
    assert pins[0] not in init["root_public_keys"] and rotated["revoked"] == [old_id]
    bad = blocklist("keys", "rotate-root", *args, "--roots", "2", "--threshold", "3", cwd=tmp_path)
    assert bad.returncode == 2 and "--threshold" in bad.stderr


def test_every_command_module_is_registered() -> None:
    """A command group module that is not in GROUPS would silently offer no commands."""
    import pkgutil

    import blocklist.cli as package

    modules = {
        m.name
        for m in pkgutil.iter_modules(package.__path__)
        if m.name != "__main__"
        and hasattr(__import__(f"blocklist.cli.{m.name}", fromlist=["_"]), "register")
    }
    assert modules == {g.__name__.rsplit(".", 1)[1] for g in cli.GROUPS}
    # Every group contributes at least one subcommand to the parser.
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert {
        "init",
        "officer",
        "import",
        "publish",
        "takedown",
        "keys",
        "complaints",
        "audit",
    } <= set(choices)


# ---------------------------------------------------------------- integrity and usability


def test_complaint_escapes_never_reach_the_terminal(authority: Authority) -> None:
    """A complaint whose text carries terminal escapes (clear screen, retitle, hyperlink) and
    bidi overrides is shown with those characters made visible, never interpreted."""
    asp = authority.json("asp", "add", "isp-escapes.example")
    hostile = {
        "idempotency_key": "cli-escape-key-0001",
        "host": "x.example\x1b[2J\x1b]0;pwned\x07",
        "role": "visitor",
        "reason": "fine\u202egnp.exe\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\\x9b31m",
        "contact": "me\u2066@\u2069example\r\x00",
        "received": int(time.time()),
        "ticket": "T-ESC1-0001",
    }
    request = urllib.request.Request(
        authority.url + "/v1/complaints",
        data=json.dumps(hostile).encode(),
        headers={"Authorization": f"Bearer {asp['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
    bad = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u2069", "\r", "\x00"]
    for args in (
        ("complaints", "show", "T-ESC1-0001"),
        ("complaints", "list"),
        ("--json", "complaints", "show", "T-ESC1-0001"),
    ):
        out = authority.run(*args, who="olga")
        assert out.returncode == 0, out.stderr
        assert not [c for c in bad if c in out.stdout + out.stderr], (args, out.stdout)
    shown = authority.run("complaints", "show", "T-ESC1-0001", who="olga").stdout
    assert "\\u001b[2J" in shown and "\\u202e" in shown and "visitor's ticket" in shown
    # --json stays valid JSON and keeps the text (as escapes) for tools.
    data = json.loads(
        authority.run("--json", "complaints", "show", "T-ESC1-0001", who="olga").stdout
    )
    assert data["reason"].startswith("fine\u202egnp")


def test_home_hosted_entries_in_messages_lists_and_batches(authority: Authority) -> None:
    out = authority.run(
        "add", "home-msg.example", "--country", "FR", "--evidence", "c-9", who="alice"
    )
    assert out.returncode == 0 and "takedown" in out.stdout
    assert "another approver must approve" not in out.stdout
    listed = authority.json("list", "--status", "takedown", who="olga")["entries"]
    assert "home-msg.example" in [e["value"] for e in listed]
    status = authority.run("status", who="olga").stdout
    assert "takedown " in status and "removal_pending " in status

    text = authority.directory / "mixed.txt"
    text.write_text("mixed-a.example\nmixed-b.example\nmixed-a.example\n", encoding="utf-8")
    out = authority.run("import", text, "--country", "FR", "--evidence", "ev-mixed", who="alice")
    assert out.returncode == 0, out.stderr
    batch_id = int(out.stdout.split()[1].rstrip(":"))
    assert "hosted at home" in out.stdout
    # The duplicate is reported at its file line, citing the file line it repeats.
    assert refused_rows(out.stdout) == {3: ["mixed-a.example", "duplicate"]}
    assert "repeats line 1" in out.stdout
    records = authority.json("audit", "log", "--limit", "5", who="olga")["records"]
    imported = next(r for r in records if r["action"] == "batch.import")
    assert imported["detail"]["refused"] == 1 and imported["detail"]["batch"] == batch_id


def test_batch_accept_counts_takedowns_apart(authority: Authority) -> None:
    csv_file = authority.directory / "abroad-and-home.csv"
    csv_file.write_text(
        "value,hosting_country,evidence\n"
        "split-a.example,NL,e\nsplit-b.example,NL,e\nsplit-c.example,FR,e\n",
        encoding="utf-8",
    )
    out = authority.run("import", csv_file, who="alice")
    batch_id = int(out.stdout.split()[1].rstrip(":"))
    accepted = authority.run("batch", "accept", str(batch_id), "--confirm-large", who="bob")
    assert accepted.returncode == 0, accepted.stderr
    assert "2 entries are active" in accepted.stdout
    assert "1 hosted at home stay in takedown" in accepted.stdout


def test_init_writes_a_config_and_serve_warns_about_the_root_key(tmp_path: Path) -> None:
    config = tmp_path / "new" / "authority.toml"
    config.parent.mkdir()
    out = blocklist(
        "init", "--config", config, "--admin", "root", "--country", "be", cwd=config.parent
    )
    assert out.returncode == 0, out.stderr
    assert f"wrote {config}" in out.stderr
    assert 'country = "BE"' in config.read_text()
    assert (config.parent / "authority-state" / "authority.db").exists()
    # serve with the root key still present warns, then fails on the port it cannot bind.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = blocklist(
            "serve", "--config", config, "--port", str(port), cwd=config.parent, timeout=60
        )
    assert "warning: root private key(s) still in" in serve.stderr and "root" in serve.stderr
    assert serve.returncode == 1 and "cannot serve" in serve.stderr


def test_audit_verify_against_a_saved_notification(authority: Authority) -> None:
    entry = add_entry(authority, "anchored.example")
    assert authority.run("approve", str(entry), who="bob").returncode == 0
    assert authority.run("publish", who="alice").returncode == 0
    request = urllib.request.Request(
        authority.url + "/v1/list/hashed/notification",
        headers={"Authorization": f"Bearer {authority.tokens['olga']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        saved = authority.directory / "asp-copy.bin"
        saved.write_bytes(resp.read())
    offline = blocklist(
        "audit",
        "verify",
        "--config",
        authority.config,
        "--notification",
        saved,
        "--root-key",
        authority.root_key,
        cwd=authority.directory,
    )
    assert offline.returncode == 0, offline.stderr
    assert "matches 1 published head" in offline.stdout
    online = authority.run(
        "audit", "verify", "--notification", saved, "--root-key", authority.root_key, who="olga"
    )
    assert online.returncode == 0 and "matches 1 published head" in online.stdout
    wrong = authority.run("audit", "verify", "--expect-head", f"1:{'0' * 64}", who="olga")
    assert wrong.returncode == 1 and "published head at record 1" in wrong.stderr
    forged = authority.directory / "forged.bin"
    forged.write_bytes(saved.read_bytes().replace(b'"records":', b'"records":1'))
    bad = authority.run(
        "audit", "verify", "--notification", forged, "--root-key", authority.root_key, who="olga"
    )
    assert bad.returncode == 1 and "forged.bin" in bad.stderr
