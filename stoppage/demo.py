"""A signed DEMO list on placeholder names, for previewing the stop page without an authority.

`stoppage demo` writes a throw-away root key, a list with `blocked-demo.test` (a domain entry)
and `shared-host.example/album/42/` (a URL entry), a configuration, and serves the stop page on
loopback. Translators and operators use it to see their texts; tests and benchmarks use
`write_signed_list` to give the stop page a verified list exactly as `resolver sync` would.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

from blocklist.entries import canonical_entry
from blocklist.state import Entry, Kind, ListState
from blocklist.sync.local import LocalSigner

DEMO_ENTRIES: list[tuple[str, int, Kind]] = [
    ("blocked-demo.test", 1001, Kind.DOMAIN),
    ("http://shared-host.example/album/42/", 1002, Kind.URL),
]


def write_signed_list(
    state_dir: Path,
    entries: list[tuple[str, int, Kind]] = DEMO_ENTRIES,
    *,
    authority: str = "Demo Authority (DEMO KEYS)",
    serial: int = 1,
    list_id: str = "national",
    now: int | None = None,
    signer: LocalSigner | None = None,
) -> str:
    """Sign a list of (raw value, entry id, kind) and save it as `resolver sync` would, with
    `signer` or a fresh throw-away root.

    Returns the root public key ("ed25519:…") to pin in the stop page's [sync] root_keys.
    """
    now = int(time.time()) if now is None else now
    state = ListState.from_entries(
        [Entry.from_value(canonical_entry(kind, raw), eid, kind) for raw, eid, kind in entries]
    )
    signer = signer or LocalSigner.generate(now)
    signer.save(
        state_dir,
        state,
        serial=serial,
        now=now,
        list_id=list_id,
        authority=authority,
        lifetime=86400,
    )
    return signer.root_text


DEMO_CONFIG = """\
# DEMO configuration written by `stoppage demo`: placeholder names, throw-away keys.
[sync]
root_keys = ["{root}"]
state_dir = "sync-state"
authority_url = "http://127.0.0.1:9"   # nothing listens: complaints wait in the outbox

[authority]
name = {{ en = "Demo Authority", fr = "Autorité de démonstration" }}
website = "https://authority.example/"
contact = "contact@authority.example"
legal_basis = "DEMO: the law that orders blocking would be quoted here."
complaint_policy = "DEMO: complaints are decided within 7 days."

[operator]
name = "Demo ISP"
contact = "abuse@isp.example"

[page]
hotline = {{ name = "Demo hotline", url = "https://hotline.example/report" }}

[[page.confidential_help]]
name = "Demo confidential helpline"
url = "https://help.example/"
note = "0800 000 000"

[server]
listen = ["127.0.0.1"]
port = {port}

[complaints]
state_dir = "stoppage-state"

[metrics]
enabled = false
"""


def write_demo(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    root = write_signed_list(directory / "sync-state")
    path = directory / "stoppage.toml"
    path.write_text(DEMO_CONFIG.format(root=root, port=port))
    return path


def run_demo(directory: Path | None, port: int) -> int:
    """`stoppage demo`: serve until Ctrl-C or SIGTERM, from `directory` or from a temporary one
    that is removed afterwards."""
    from stoppage.server import serve

    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="stoppage-demo-"))
            )
        path = write_demo(directory, port)
        print(f"DEMO stop page (placeholder names, throw-away keys) from {path}")
        print(f"  blocked:  curl -H 'Host: blocked-demo.test' http://127.0.0.1:{port}/")
        print(
            "  chromium: chromium --host-resolver-rules='MAP blocked-demo.test "
            f"127.0.0.1:{port}' http://blocked-demo.test/"
        )
        sys.stdout.flush()
        serve(path)
    return 0
