"""`keys`: the authority's key sets, signed by k of n root keys brought online for the purpose.

renew (a fresh online signing key), revoke (keys that leaked; optionally a recovery session that
ASPs take whatever serial a thief made them record), rotate-root, show.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config
from blocklist.cli.parsing import Commands, positive
from blocklist.cli.rendering import iso, print_json


def _initialised(args: argparse.Namespace):
    config = load_authority_config(args.config)
    if not (config.keys_dir / "chain.txt").exists():
        raise CliError(f"no keys in {config.keys_dir}: the authority is not initialised", 2)
    return config


def _root_keys(args: argparse.Namespace, keys_dir: Path) -> list[Path]:
    """The root private keys given with --root-key, or those left in the keys directory."""
    if args.root_key:
        paths = [Path(p) for p in args.root_key]
    else:
        paths = sorted(keys_dir.glob("root*.key"))
        if not paths:
            raise CliError(
                "no root private key given",
                2,
                ["hint: bring the offline root key(s) online and pass each with --root-key FILE"],
            )
    for path in paths:
        if not path.is_file():
            raise CliError(f"root key {path} does not exist", 2)
    return paths


def _signing_error(what: str, exc: Exception) -> CliError:
    return CliError(f"cannot {what}: {exc}")


def cmd_keys_renew(args: argparse.Namespace) -> int:
    """Certify a fresh online signing key in the next key set; the old key leaves the set."""
    from blocklist.authority import keyring
    from signing import SigningError

    config = _initialised(args)
    roots = _root_keys(args, config.keys_dir)
    now = int(time.time())
    days = args.days or config.publication.signing_key_days
    try:
        signer = keyring.new_signing_key(config.keys_dir, roots, now, days)
    except (SigningError, OSError) as exc:
        raise _signing_error("certify a new signing key", exc) from None
    expires = signer.verify(now).expires_soonest()
    if args.json:
        version = keyring.key_state(config.keys_dir).version
        print_json({"expires": expires, "keyset_version": version})
    else:
        print(f"New signing key certified until {iso(expires)}; the running service takes it")
        print("at its next re-signing (within [publication] resign_minutes). ASPs refuse the old")
        print("key once they have seen the new key set.")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """List signing keys as revoked in the next key set (a fresh key replaces a revoked one)."""
    from blocklist.authority import keyring
    from signing import SigningError

    config = _initialised(args)
    roots = _root_keys(args, config.keys_dir)
    days = args.days or config.publication.signing_key_days
    try:
        result = keyring.revoke(
            config.keys_dir, roots, args.key_id, int(time.time()), days=days, recover=args.recover
        )
    except (SigningError, OSError) as exc:
        raise _signing_error("revoke", exc) from None
    if args.json:
        print_json(
            {
                "revoked": result.revoked,
                "keyset_version": result.keyset_version,
                "recover_session": result.recover_session,
            }
        )
        return 0
    print(f"Key set {result.keyset_version}: revoked {', '.join(result.revoked)}.")
    if args.recover:
        print(f"Recovery session {result.recover_session}: the service publishes in it from its")
        print("next re-signing; ASPs take it whatever serial a stolen key made them record.")
    return 0


def cmd_keys_rotate_root(args: argparse.Namespace) -> int:
    """Replace the root set; a threshold of the old roots certifies the new one."""
    from blocklist.authority import keyring
    from signing import SigningError

    config = _initialised(args)
    roots = _root_keys(args, config.keys_dir)
    if not 1 <= args.threshold <= args.roots:
        raise CliError(f"--threshold must be between 1 and --roots ({args.roots})", 2)
    try:
        pins = keyring.rotate_root(
            config.keys_dir, roots, int(time.time()), roots=args.roots, threshold=args.threshold
        )
    except (SigningError, OSError) as exc:
        raise _signing_error("rotate the root", exc) from None
    if args.json:
        print_json({"root_public_keys": pins, "threshold": args.threshold})
        return 0
    print(f"New root set ({args.threshold} of {args.roots}); ASPs follow it by themselves.")
    print("Pin these in new installations, and move the new root keys offline:")
    for pin in pins:
        print(f"  {pin}")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """The root set and key set in force."""
    from blocklist.authority import keyring
    from signing.keys import format_public_key

    config = _initialised(args)
    state = keyring.key_state(config.keys_dir)
    roots = keyring.read_roots(config.keys_dir)
    out = {
        "root_version": roots.version,
        "root_threshold": roots.threshold,
        "root_public_keys": [format_public_key(k) for k in roots.keys],
        "keyset_version": state.version,
        "signing_keys": [
            {
                "key_id": k.key_id.hex(),
                "name": k.name,
                "not_before": k.not_before,
                "not_after": k.not_after,
            }
            for k in state.keys
        ],
        "revoked": sorted(k.hex() for k in state.revoked),
        "recover_session": state.recover_session,
    }
    if args.json:
        print_json(out)
        return 0
    print(f"Root set v{roots.version}: {roots.threshold} of {len(roots.keys)} keys sign")
    for pin in out["root_public_keys"]:
        print(f"  {pin}")
    print(f"Key set v{state.version}:")
    for k in out["signing_keys"]:
        print(f"  {k['key_id']}  {iso(k['not_before'])} .. {iso(k['not_after'])}")
    if out["revoked"]:
        print(f"Revoked: {', '.join(out['revoked'])}")
    if state.recover_session:
        print(f"Recovery session: {state.recover_session}")
    return 0


def register(cmds: Commands) -> None:
    keys = Commands(cmds.add("keys", "Manage the authority's signing keys."), "keys commands")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="authority.toml")
        p.add_argument(
            "--root-key",
            metavar="FILE",
            action="append",
            help="a root private key (repeat for k of n; default: root*.key in the keys dir)",
        )

    p = keys.add("renew", "Certify a fresh online signing key in the next key set.", cmd_keys_renew)
    common(p)
    p.add_argument("--days", type=positive, help="validity (default: signing_key_days)")

    p = keys.add("revoke", "Revoke signing keys in the next key set.", cmd_keys_revoke)
    common(p)
    p.add_argument("key_id", nargs="+", metavar="KEY_ID", help="16 hex digits (`keys show`)")
    p.add_argument(
        "--recover",
        action="store_true",
        help="after a theft: start a recovery session ASPs accept whatever serial they recorded",
    )
    p.add_argument("--days", type=positive, help="validity of a replacement key")

    p = keys.add("rotate-root", "Replace the root key set (k of n).", cmd_keys_rotate_root)
    common(p)
    p.add_argument("--roots", type=positive, default=1, help="number of new root keys (n)")
    p.add_argument("--threshold", type=positive, default=1, help="signatures needed (k)")

    p = keys.add("show", "Show the root set and key set in force.", cmd_keys_show)
    p.add_argument("--config", required=True, help="authority.toml")
