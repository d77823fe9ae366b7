"""`audit log` and `audit verify` (through the API, or offline with --config)."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from blocklist.cli.client import client
from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config, open_store
from blocklist.cli.parsing import Commands, entry_id, positive
from blocklist.cli.rendering import iso, print_json, reply_rows, say


def cmd_audit_log(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/audit", query={"entry": args.entry, "limit": args.limit})
    return reply_rows(
        args,
        data,
        ["seq", "time", "actor", "action", "entry", "reason", "detail"],
        lambda d: [_record_row(r) for r in d.get("records") or []],
        "No audit records.",
    )


def _record_row(r: dict) -> list:
    return [
        r["seq"],
        iso(r.get("time")),
        r.get("actor"),
        r.get("action"),
        r.get("entry_id"),
        r.get("reason") or "",
        r.get("detail") or "",
    ]


def _print_chain_report(report: dict, args: argparse.Namespace) -> int:
    anchors = report.get("anchors") or []
    if args.json:
        print_json(report)
    elif report.get("ok"):
        head = f"{report['records']}:{report['head']}"
        print(f"audit chain ok: {report['records']} records, head {head}")
        if anchors:
            newest = anchors[-1]
            print(
                f"matches {len(anchors)} published head(s), the newest at record "
                f"{newest['records']}: no record up to it was changed, removed or inserted"
            )
        else:
            print(
                "(not checked against published heads: a consistent rewrite would pass; "
                "use --notification or --expect-head)"
            )
    else:
        say(f"error: audit chain broken: {report.get('problem')}")
        say(f"  {report.get('records')} good records; last good head {report.get('head')}")
    return 0 if report.get("ok") else 1


def _expected_heads(args: argparse.Namespace, config) -> list:
    from blocklist.authority.anchors import AnchorError, head_from_notification, parse_head
    from signing import parse_public_key

    heads = []
    for text in args.expect_head or []:
        try:
            heads.append(parse_head(text))
        except ValueError as exc:
            raise CliError(f"--expect-head: {exc}", 2) from None
    if not args.notification:
        return heads
    root_text = args.root_key
    if root_text is None and config is not None:
        pub = config.keys_dir / "root.pub"
        try:
            root_text = pub.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {pub}: {exc.strerror or exc}", 2) from None
    if root_text is None:
        raise CliError("--notification needs the root public key: --root-key ed25519:…", 2)
    try:
        root = parse_public_key(root_text)
    except Exception as exc:  # the signing package's parse errors
        raise CliError(f"--root-key: {exc}", 2) from None
    for name in args.notification:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {name}: {exc.strerror or exc}", 2) from None
        try:
            heads.append(head_from_notification(data, [root], name))
        except AnchorError as exc:
            raise CliError(str(exc), 1) from None
    return heads


def cmd_audit_verify(args: argparse.Namespace) -> int:
    config = load_authority_config(args.config) if args.config else None
    heads = _expected_heads(args, config)
    if config is None:
        query = [("head", f"{h.records}:{h.hash}") for h in heads]
        return _print_chain_report(client(args).call("GET", "/v1/audit/verify", query=query), args)
    if not config.database.exists():
        raise CliError(f"no database at {config.database}: the authority is not initialised", 2)
    store = open_store(config.database)
    try:
        report = store.verify_audit(heads)
    except sqlite3.Error as exc:
        raise CliError(f"cannot read the audit log in {config.database}: {exc}") from None
    finally:
        store.close()
    return _print_chain_report(dict(report.__dict__), args)


def register(cmds: Commands) -> None:
    audit = Commands(cmds.add("audit", "Read and verify the audit log."), "audit commands")
    p = audit.add("log", "Show audit records, newest first.", cmd_audit_log)
    p.add_argument("--entry", type=entry_id, metavar="ID", help="only records of this entry")
    p.add_argument("--limit", type=positive, default=50)
    p = audit.add(
        "verify",
        "Verify the audit hash chain (offline with --config, else through the API).",
        cmd_audit_verify,
    )
    p.add_argument("--config", help="authority.toml: read the database directly")
    p.add_argument(
        "--notification",
        action="append",
        metavar="FILE",
        help="a signed notification (e.g. an ASP's copy): the log must pass through its audit "
        "head; repeatable",
    )
    p.add_argument(
        "--expect-head",
        action="append",
        metavar="RECORDS:HASH",
        help="a head noted down earlier (as printed by this command); repeatable",
    )
    p.add_argument(
        "--root-key",
        metavar="KEY",
        help="root public key (ed25519:…) that signed the notifications (default with "
        "--config: keys/root.pub; pass it explicitly when the state directory is in doubt)",
    )
