"""`audit log` and `audit verify` (through the API, or offline with --config)."""

from __future__ import annotations

import argparse
import sqlite3

from blocklist.cli.client import client
from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config, open_store
from blocklist.cli.parsing import Commands, entry_id, positive
from blocklist.cli.rendering import iso, print_json, say, table


def cmd_audit_log(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/audit", query={"entry": args.entry, "limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    records = data.get("records") or []
    if not records:
        print("No audit records.")
        return 0
    rows = [
        [
            r["seq"],
            iso(r.get("time")),
            r.get("actor"),
            r.get("action"),
            r.get("entry_id"),
            r.get("reason") or "",
            r.get("detail") or "",
        ]
        for r in records
    ]
    print(table(["seq", "time", "actor", "action", "entry", "reason", "detail"], rows))
    return 0


def _print_chain_report(report: dict, args: argparse.Namespace) -> int:
    if args.json:
        print_json(report)
    elif report.get("ok"):
        print(f"audit chain ok: {report['records']} records, head {report['head']}")
    else:
        say(f"error: audit chain broken: {report.get('problem')}")
        say(f"  {report.get('records')} good records; last good head {report.get('head')}")
    return 0 if report.get("ok") else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if not args.config:
        return _print_chain_report(client(args).call("GET", "/v1/audit/verify"), args)
    config = load_authority_config(args.config)
    if not config.database.exists():
        raise CliError(f"no database at {config.database}: the authority is not initialised", 2)
    store = open_store(config.database)
    try:
        report = store.verify_audit()
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
