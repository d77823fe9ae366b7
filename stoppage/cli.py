"""`stoppage`: the ASP's stop page — serve it, check a configuration, look at the outbox, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blocklist.config import load_config, run_command
from stoppage.config import StoppageConfig


def _iso(ts: int | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def cmd_serve(args: argparse.Namespace) -> int:
    from stoppage.server import serve

    serve(args.config)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Load the configuration, its catalogues and templates, and render every page once."""
    from blocklist.sync import verified as persist
    from stoppage.app import StopPage
    from stoppage.pages import missing_texts
    from stoppage.server import describe

    config = load_config(args.config, StoppageConfig)
    service = StopPage(config, source=str(args.config))
    print(json.dumps(describe(config), indent=2))
    values = {
        "host": "blocked-demo.test",
        "entry": "1",
        "switch_base": "/album/?",
        "complaint_href": "/complaint",
        "token": "t" * 100,
    }
    for lang in config.page.languages:
        sizes = {
            kind: len(service.renderer.fill(kind, lang, values))
            for kind in ("blocked", "blocked_url", "neutral", "form")
        }
        print(
            f"page {lang}: blocked notice {sizes['blocked']} bytes, URL notice "
            f"{sizes['blocked_url']} bytes, neutral page {sizes['neutral']} bytes, "
            f"form {sizes['form']} bytes"
        )
        missing = service.translators[lang].missing()
        if missing:
            print(
                f"warning: page {lang}: {len(missing)} messages are not translated and are shown "
                f"in English (marked lang=en): {', '.join(missing[:8])}"
                + (" …" if len(missing) > 8 else "")
            )
    for lang, key, shown in missing_texts(config):
        print(
            f"warning: page {lang}: {key} has no {lang!r} text; shown in {shown!r} "
            f"(marked lang={shown})"
        )
    body = config.server.max_body_bytes
    if body and body < config.form_bytes_needed:
        print(
            f"warning: server.max_body_bytes = {body} is below the {config.form_bytes_needed} "
            "bytes a complaint within the limits can take in a non-Latin script; using "
            f"{config.body_limit}"
        )
    print(f"complaint status address (shown with each ticket): {config.status_url}")
    try:
        loaded = persist.load(
            config.sync.state_dir, config.sync.pinned_roots, config.sync.max_entries
        )
    except Exception as exc:
        print(f"verified list: cannot load: {exc}", file=sys.stderr)
        return 1
    if loaded is None:
        print(f"verified list: none yet in {config.sync.state_dir} (is `resolver sync` running?)")
    else:
        print(
            f"verified list: serial {loaded.serial}, {len(loaded.state)} entries, "
            f"expires {_iso(loaded.expires)}"
        )
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Delivery facts of the outbox (never the complaints' text)."""
    from stoppage.outbox import Outbox

    config = load_config(args.config, StoppageConfig)
    path = config.complaints.outbox_path
    if not path.exists():
        print(f"no outbox yet at {path}")
        return 0
    outbox = Outbox(path)
    try:
        counts = outbox.counts_sync()
        rows = outbox.rows_sync()
    finally:
        outbox.close()
    if args.json:
        print(json.dumps({"counts": counts, "complaints": rows}, indent=2))
        return 0
    print("  ".join(f"{k} {v}" for k, v in counts.items()))
    for r in rows:
        remote = r["complaint_id"] or "-"
        line = f"{r['ticket']}  {_iso(r['received'])}  {r['state']:13} {remote:16} {r['status']}"
        if r["state"] != "forwarded" and r["last_error"]:
            line += f"  attempts {r['attempts']}: {r['last_error']}"
        print(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stoppage.demo import run_demo

    return run_demo(args.dir, args.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stoppage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in [
        ("serve", cmd_serve, "serve the stop page, follow the list, forward complaints"),
        ("check", cmd_check, "validate a configuration and render every page once"),
        ("outbox", cmd_outbox, "show the complaints outbox (delivery state only)"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="stoppage.toml")
        p.set_defaults(fn=fn)
        if name == "outbox":
            p.add_argument("--json", action="store_true")
    p = sub.add_parser("demo", help="serve the stop page on loopback with a DEMO list")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--dir", type=Path, default=None, help="where to write the demo files")
    p.set_defaults(fn=cmd_demo)
    args = parser.parse_args(argv)
    return run_command(args.fn, args)


if __name__ == "__main__":
    sys.exit(main())
