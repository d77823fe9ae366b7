"""`officer`, `asp` and `token`: who may call the authority, and their credentials."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from blocklist.authority.roles import ROLES, Principal
from blocklist.cli.client import client
from blocklist.cli.errors import CliError
from blocklist.cli.offline import load_authority_config, open_store
from blocklist.cli.parsing import Commands, entry_id
from blocklist.cli.rendering import iso, print_json, reply, reply_rows, table
from blocklist.cli.tokens import check_token_out, show_token

# Offline commands act as the authority itself, on its own state directory.
LOCAL = Principal("system", 0, "local", "admin")
T = TypeVar("T")


def _on_state_dir(args: argparse.Namespace, action: Callable[[Any], T]) -> T:
    """Run `action(store)` on the authority's own database (offline commands, as `LOCAL`)."""
    from blocklist.authority.errors import AuthorityError

    config = load_authority_config(args.config)
    if not config.database.exists():
        raise CliError(f"no database at {config.database}: run `blocklist init` first", 2)
    store = open_store(config.database)
    try:
        return action(store)
    except AuthorityError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()


def _offline_officer_add(args: argparse.Namespace) -> dict:
    info, token = _on_state_dir(args, lambda store: store.add_officer(LOCAL, args.name, args.role))
    return {**info, "token": token}


def cmd_officer_add(args: argparse.Namespace) -> int:
    check_token_out(args)
    if args.config:
        data = _offline_officer_add(args)
    else:
        data = client(args).call("POST", "/v1/officers", {"name": args.name, "role": args.role})
    show_token(args, f"Officer {data.get('name')} ({data.get('role')})", data)
    if data.get("awaiting_confirmation") and not args.json:
        print(
            f"The account stays inactive until another admin or oversight runs "
            f"`blocklist officer confirm {data.get('name')}`."
        )
    return 0


def cmd_officer_list(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/officers")
    head = ["id", "name", "role", "active", "state", "created"]
    return reply(args, data, lambda d: table(head, [_officer_row(o) for o in d["officers"]]))


def _officer_row(o: dict) -> list:
    return [
        o["id"],
        o["name"],
        o["role"] + (f" → {o['pending_role']}" if o.get("pending_role") else ""),
        bool(o.get("active")),
        "awaiting confirmation"
        if o.get("awaiting_confirmation")
        else "deactivated"
        if o.get("deactivated")
        else "",
        iso(o.get("created")),
    ]


def cmd_officer_confirm(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/officers/{args.name}/confirm")
    return reply(args, data, lambda o: f"Officer {o['name']} confirmed: {o['role']}, active.")


def cmd_officer_role(args: argparse.Namespace) -> int:
    body = {"role": args.role, "reason": args.reason}
    data = client(args).call("POST", f"/v1/officers/{args.name}/role", body)
    return reply(args, data, _role_changed)


def _role_changed(officer: dict) -> str:
    if officer.get("pending_role"):
        return (
            f"Officer {officer['name']} stays {officer['role']} until another admin or oversight "
            f"runs `blocklist officer confirm {officer['name']}`."
        )
    return f"Officer {officer['name']} is now {officer['role']}."


def cmd_officer_deactivate(args: argparse.Namespace) -> int:
    data = client(args).call(
        "POST", f"/v1/officers/{args.name}/deactivate", {"reason": args.reason}
    )
    return reply(
        args,
        data,
        lambda o: f"Officer {o['name']} deactivated: every token of theirs is refused from now on.",
    )


def cmd_officer_console_code(args: argparse.Namespace) -> int:
    """A web console setup code, offline on the state directory (e.g. for the first admin)."""
    from blocklist.authority.console.accounts import Accounts

    code = _on_state_dir(args, lambda store: Accounts(store.db).reset(LOCAL, args.name))
    if args.json:
        print_json({"officer": args.name, "setup_code": code})
    else:
        print(f"Console setup code for {args.name} (valid 24 hours, shown once): {code}")
        print("They open /console/setup, enter it, choose a password and scan the TOTP code.")
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
    return reply_rows(
        args,
        data,
        ["id", "name", "edition", "active", "created"],
        lambda d: [_asp_row(a) for a in d["asps"]],
        "No ASPs yet.",
    )


def _asp_row(a: dict) -> list:
    return [
        a["id"],
        a["name"],
        "plain" if a.get("plain_allowed") else "hashed",
        bool(a.get("active")),
        iso(a.get("created")),
    ]


def cmd_asp_deactivate(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/asps/{args.name}/deactivate", {"reason": args.reason})
    return reply(
        args, data, lambda a: f"ASP {a['name']} deactivated: its tokens are refused from now on."
    )


def cmd_token_list(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/tokens")
    head = ["id", "owner", "label", "created", "revoked", "this one"]
    return reply(args, data, lambda d: table(head, [_token_row(t) for t in d["tokens"]]))


def _token_row(t: dict) -> list:
    return [
        t["id"],
        t.get("officer") or f"ASP {t.get('asp')}",
        t.get("label"),
        iso(t.get("created")),
        iso(t.get("revoked")) if t.get("revoked") else "",
        "yes" if t.get("current") else "",
    ]


def _issue(args: argparse.Namespace, body: dict, what: str) -> int:
    check_token_out(args)
    data = client(args).call("POST", "/v1/tokens", body)
    show_token(args, what, data)
    if data.get("revoked") and not args.json:
        print(f"Token {data['revoked']} (the one this command used) is revoked.")
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    if (args.officer is None) == (args.asp is None):
        raise CliError("name exactly one of --officer or --asp", 2)
    body = {"officer": args.officer, "asp": args.asp, "label": args.label or ""}
    owner = f"officer {args.officer}" if args.officer else f"ASP {args.asp}"
    return _issue(args, body, f"New token for {owner}")


def cmd_token_rotate(args: argparse.Namespace) -> int:
    return _issue(args, {"revoke_current": True, "label": "rotated"}, "Your new token")


def cmd_token_revoke(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/tokens/{args.id}/revoke", {"reason": args.reason})
    return reply(args, data, lambda t: f"Token {t['id']} revoked: it is refused from now on.")


def register(cmds: Commands) -> None:
    officer = Commands(cmds.add("officer", "Create, confirm and deactivate officers."), "officer")
    p = officer.add("add", "Create an officer and print its token (shown once).", cmd_officer_add)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    p.add_argument(
        "--config",
        help="authority.toml: create the officer offline, on the state directory, needing no "
        "confirmation (for the first oversight or approver)",
    )
    officer.add("list", "List officers.", cmd_officer_list)
    p = officer.add(
        "confirm",
        "Confirm a new approver or admin, or a raised role (a second person).",
        cmd_officer_confirm,
    )
    p.add_argument("name")
    p = officer.add(
        "role", "Change an officer's role (raising it waits for a confirmation).", cmd_officer_role
    )
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    p.add_argument("--reason", required=True)
    p = officer.add(
        "deactivate", "Deactivate an officer; their tokens stop working.", cmd_officer_deactivate
    )
    p.add_argument("name")
    p.add_argument("--reason", required=True)
    p = officer.add(
        "console-code",
        "Issue a web console setup code, offline (resets console sign-in).",
        cmd_officer_console_code,
    )
    p.add_argument("name")
    p.add_argument("--config", required=True, help="authority.toml (acts on the state directory)")

    asp = Commands(cmds.add("asp", "Create, list and deactivate access providers (ASPs)."), "asp")
    p = asp.add("add", "Create an ASP and print its token (shown once).", cmd_asp_add)
    p.add_argument("name")
    p.add_argument("--plain", action="store_true", help="allow the plain edition (for an RPZ feed)")
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    asp.add("list", "List ASPs.", cmd_asp_list)
    p = asp.add("deactivate", "Deactivate an ASP; its tokens stop working.", cmd_asp_deactivate)
    p.add_argument("name")
    p.add_argument("--reason", required=True)

    token = Commands(cmds.add("token", "List, issue, rotate and revoke API tokens."), "token")
    token.add("list", "List tokens (never shows one).", cmd_token_list)
    p = token.add("issue", "Issue a new token for an officer or ASP (admins).", cmd_token_issue)
    p.add_argument("--officer", metavar="NAME")
    p.add_argument("--asp", metavar="NAME")
    p.add_argument("--label", help="what the token is for")
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    p = token.add(
        "rotate",
        "Replace your own token: a new one, and the one used here revoked.",
        cmd_token_rotate,
    )
    p.add_argument("--token-out", metavar="FILE", help="write the new token to FILE (mode 0600)")
    p = token.add(
        "revoke", "Revoke a token by id (admins: any; others: their own).", cmd_token_revoke
    )
    p.add_argument("id", type=entry_id)
    p.add_argument("--reason", required=True)
