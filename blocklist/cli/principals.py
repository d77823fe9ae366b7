"""`officer` and `asp`: the people and access providers the authority knows."""

from __future__ import annotations

import argparse

from blocklist.authority.roles import ROLES
from blocklist.cli.client import client
from blocklist.cli.parsing import Commands
from blocklist.cli.rendering import iso, print_json, table
from blocklist.cli.tokens import check_token_out, show_token


def cmd_officer_add(args: argparse.Namespace) -> int:
    check_token_out(args)
    data = client(args).call("POST", "/v1/officers", {"name": args.name, "role": args.role})
    show_token(args, f"Officer {data.get('name')} ({data.get('role')})", data)
    return 0


def cmd_officer_list(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/officers")
    if args.json:
        print_json(data)
        return 0
    rows = [
        [o["id"], o["name"], o["role"], bool(o.get("active")), iso(o.get("created"))]
        for o in data["officers"]
    ]
    print(table(["id", "name", "role", "active", "created"], rows))
    return 0


def cmd_asp_add(args: argparse.Namespace) -> int:
    check_token_out(args)
    body = {"name": args.name, "plain_allowed": args.plain}
    data = client(args).call("POST", "/v1/asps", body)
    edition = "plain and hashed editions" if data.get("plain_allowed") else "hashed edition"
    show_token(args, f"ASP {data.get('name')} ({edition})", data)
    return 0


def cmd_asp_list(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/asps")
    if args.json:
        print_json(data)
        return 0
    if not data["asps"]:
        print("No ASPs yet.")
        return 0
    rows = [
        [
            a["id"],
            a["name"],
            "plain" if a.get("plain_allowed") else "hashed",
            bool(a.get("active")),
            iso(a.get("created")),
        ]
        for a in data["asps"]
    ]
    print(table(["id", "name", "edition", "active", "created"], rows))
    return 0


def register(cmds: Commands) -> None:
    officer = Commands(cmds.add("officer", "Create and list officers."), "officer commands")
    p = officer.add("add", "Create an officer and print its token (shown once).", cmd_officer_add)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    officer.add("list", "List officers.", cmd_officer_list)

    asp = Commands(cmds.add("asp", "Create and list access providers (ASPs)."), "asp commands")
    p = asp.add("add", "Create an ASP and print its token (shown once).", cmd_asp_add)
    p.add_argument("name")
    p.add_argument("--plain", action="store_true", help="allow the plain edition (for an RPZ feed)")
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    asp.add("list", "List ASPs.", cmd_asp_list)
