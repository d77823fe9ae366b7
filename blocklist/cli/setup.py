"""Offline commands that set up and run the authority: `init`, `serve`."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config, open_store, write_secret
from blocklist.cli.parsing import Commands, positive
from blocklist.cli.rendering import print_json, say

CONFIG_TEMPLATE = """\
# authority.toml, written by `blocklist init`. Every key: docs/configuration.md.
[authority]
name = {name}
list_id = {list_id}
country = {country}  # content hosted here is taken down, not blocked
state_dir = "authority-state"

[api]
host = "127.0.0.1"
port = 8440

[rails]
# Names that may never be listed, whatever an officer types (your own services, big sites).
protected_names = []
"""


def _write_config(args: argparse.Namespace) -> None:
    """A first authority.toml when none exists yet, so `init` is the only setup step."""
    path = Path(args.config)
    if path.exists():
        return
    if not path.parent.is_dir():
        raise CliError(f"{path.parent} is not a directory; cannot write {path.name} there", 2)
    text = CONFIG_TEMPLATE.format(
        name=json.dumps(args.name, ensure_ascii=False),
        list_id=json.dumps(args.list_id),
        country=json.dumps(args.country.upper()),
    )
    path.write_text(text, encoding="utf-8")
    try:
        load_authority_config(args.config)
    except CliError:
        path.unlink()
        raise
    say(f"wrote {path} (edit it to taste; defaults are described in docs/configuration.md)")


def cmd_init(args: argparse.Namespace) -> int:
    from blocklist.authority import keyring
    from blocklist.authority.errors import AuthorityError

    _write_config(args)
    config = load_authority_config(args.config)
    state = config.authority.state_dir
    token_out = Path(args.token_out) if args.token_out else None
    if not 1 <= args.threshold <= args.roots:
        raise CliError(f"--threshold must be between 1 and --roots ({args.roots})", 2)
    if token_out is not None and token_out.exists():
        raise CliError(f"{token_out} already exists; choose a new file for the admin token", 2)
    if token_out is not None and not token_out.parent.is_dir():
        raise CliError(f"{token_out.parent} is not a directory; cannot write the token there", 2)
    keys = config.keys_dir
    if (keys / "root.pub").exists() or (keys / "signing.key").exists():
        raise CliError(
            f"the authority in {state} is already initialised (keys exist in {keys})",
            1,
            ["hint: to start over, move the state directory away first"],
        )
    if not state.exists():
        state.mkdir(parents=True)
        os.chmod(state, 0o700)
    store = open_store(config.database)
    try:
        try:
            # The first admin before the keys: this also checks the name, so a bad name
            # leaves nothing half-made behind.
            token = store.bootstrap_admin(args.admin)
        except AuthorityError as exc:
            if exc.code == "exists":
                raise CliError(
                    f"the authority in {state} is already initialised (officers exist in "
                    f"{config.database})",
                    1,
                    ["hint: to start over, move the state directory away first"],
                ) from None
            raise CliError(str(exc), 2) from None
    finally:
        store.close()
    try:
        root = keyring.ceremony(
            keys,
            int(time.time()),
            config.publication.signing_key_days,
            roots=args.roots,
            threshold=args.threshold,
        )
    except OSError as exc:
        raise CliError(
            f"the key ceremony failed: {exc}",
            1,
            [
                f"hint: admin {args.admin} is already in {config.database}; "
                f"move {state} away and run init again"
            ],
        ) from None
    if token_out is not None:
        try:
            write_secret(token_out, token)
        except OSError as exc:
            say(f"error: cannot write {token_out}: {exc.strerror or exc}; the token follows")
            token_out = None
    if args.json:
        pins = root.splitlines()
        out = {
            "state_dir": str(state),
            "root_public_key": pins[0],
            "root_public_keys": pins,
            "root_threshold": args.threshold,
            "admin": args.admin,
        }
        out.update({"token_file": str(token_out)} if token_out else {"token": token})
        print_json(out)
        return 0
    print(f"Initialised the authority in {state}.")
    print()
    if args.roots == 1:
        print("Root public key (give it to every ASP to pin; keep root.key offline):")
    else:
        print(
            f"Root public keys, {args.threshold} of {args.roots} sign (give them to every ASP to"
            " pin; keep each root*.key offline, with a different person):"
        )
    for pin in root.splitlines():
        print(f"  {pin}")
    print()
    if token_out is not None:
        print(f"Token of admin {args.admin} written to {token_out} (mode 0600).")
    else:
        print(f"Token of admin {args.admin} (shown once; store it safely):")
        print(f"  {token}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from blocklist.authority import server

    config = load_authority_config(args.config)
    if not (config.keys_dir / "signing.key").exists():
        raise CliError(
            f"no signing key in {config.keys_dir}: the authority is not initialised",
            2,
            [f"hint: run `blocklist init --config {args.config} --admin NAME` first"],
        )
    root_keys = sorted(config.keys_dir.glob("root*.key"))
    if root_keys:
        say(
            f"warning: root private key(s) still in {config.keys_dir} "
            f"({', '.join(k.name for k in root_keys)}); anyone who reads the state directory "
            "can certify signing keys. Move them offline (docs/authority.md, Setting up)."
        )
    host = args.host or config.api.host
    port = args.port or config.api.port
    try:
        server.serve(Path(args.config), args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def register(cmds: Commands) -> None:
    p = cmds.add("init", "Create the state directory, database, keys and first admin.", cmd_init)
    p.add_argument(
        "--config", required=True, help="authority.toml (written with defaults if missing)"
    )
    p.add_argument("--admin", required=True, metavar="NAME", help="name of the first admin")
    p.add_argument("--name", default="National Authority", help="authority name, for a new config")
    p.add_argument("--list-id", default="national", help="list id, for a new config")
    p.add_argument(
        "--country", default="FR", metavar="CC", help="home country (ISO code), for a new config"
    )
    p.add_argument("--token-out", metavar="FILE", help="write the admin token to FILE (mode 0600)")
    p.add_argument("--roots", type=positive, default=1, help="number of root keys (n, default 1)")
    p.add_argument(
        "--threshold", type=positive, default=1, help="root signatures needed (k, default 1)"
    )

    p = cmds.add("serve", "Run the authority API.", cmd_serve)
    p.add_argument("--config", required=True, help="authority.toml")
    p.add_argument("--host", help="listen address (default: [api] host)")
    p.add_argument("--port", type=positive, help="listen port (default: [api] port)")
