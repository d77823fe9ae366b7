"""`urlproxy`: the ASP's URL proxy for hosts that carry URL entries (docs/urlproxy.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blocklist.config import load_config, run_command
from urlproxy.config import UrlProxyConfig


def cmd_serve(args: argparse.Namespace) -> int:
    from urlproxy.server import serve

    serve(args.config)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and say what list the proxy would enforce."""
    from blocklist.sync import verified as persist
    from urlproxy.lookup import ProxyList

    config = load_config(args.config, UrlProxyConfig)
    s = config.server
    print(
        json.dumps(
            {
                "http": [f"{a}:{s.http_port}" for a in s.listen],
                "tls_passthrough": [f"{a}:{s.https_port}" for a in s.listen]
                if s.tls_passthrough
                else [],
                "origin_resolvers": config.origin.resolvers,
                "stop_page": config.stop_page.url,
                "verified_list": str(config.sync.state_dir),
            },
            indent=2,
        )
    )
    try:
        loaded = persist.load(
            config.sync.state_dir,
            config.sync.pinned_roots,
            config.sync.max_entries,
            config.sync.root_threshold,
        )
    except Exception as exc:
        print(f"verified list: cannot load: {exc}", file=sys.stderr)
        return 1
    if loaded is None:
        print(f"verified list: none yet in {config.sync.state_dir} (is `resolver sync` running?)")
        return 0
    lst = ProxyList(loaded)
    print(f"verified list: serial {loaded.serial}, {lst.urlhosts} hosts carrying URL entries")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="urlproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in [
        ("serve", cmd_serve, "proxy hosts carrying URL entries: 451 for listed URLs, else origin"),
        ("check", cmd_check, "validate a configuration and show the list it would enforce"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="urlproxy.toml")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    return run_command(args.fn, args)


if __name__ == "__main__":
    sys.exit(main())
