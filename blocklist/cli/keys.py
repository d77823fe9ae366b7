"""`keys renew`: certify a fresh online signing key with the root key (offline)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config
from blocklist.cli.parsing import Commands, positive
from blocklist.cli.rendering import iso, print_json


def cmd_keys_renew(args: argparse.Namespace) -> int:
    """Certify a fresh online signing key with the root key (brought online for this)."""
    from blocklist.authority import keyring
    from signing import SigningError

    config = load_authority_config(args.config)
    if not (config.keys_dir / "chain.txt").exists():
        raise CliError(f"no keys in {config.keys_dir}: the authority is not initialised", 2)
    root_key = Path(args.root_key) if args.root_key else config.keys_dir / "root.key"
    now = int(time.time())
    days = args.days or config.publication.signing_key_days
    try:
        signer = keyring.new_signing_key(config.keys_dir, root_key, now, days)
    except SigningError as exc:
        raise CliError(f"cannot certify a new signing key: {exc}") from None
    expires = signer.verify(now).expires_soonest()
    if args.json:
        print_json({"expires": expires})
    else:
        print(f"New signing key certified until {iso(expires)}; the running service takes it")
        print("at its next re-signing (within [publication] resign_minutes).")
    return 0


def register(cmds: Commands) -> None:
    keys = Commands(cmds.add("keys", "Manage the authority's signing keys."), "keys commands")
    p = keys.add("renew", "Certify a fresh online signing key with the root key.", cmd_keys_renew)
    p.add_argument("--config", required=True, help="authority.toml")
    p.add_argument("--root-key", metavar="FILE", help="root private key (default: keys/root.key)")
    p.add_argument("--days", type=positive, help="validity (default: signing_key_days)")
