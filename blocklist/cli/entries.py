"""Entry commands: add, approve, reject, delist (request, confirm, reject), show, list."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from blocklist.authority.statuses import ENTRY_FILTERS
from blocklist.cli.client import client
from blocklist.cli.errors import CliError
from blocklist.cli.parsing import Commands, entry_id, positive
from blocklist.cli.rendering import TIME_FIELDS, fields, iso, print_json, reply, table

ENTRY_FIELDS = (
    ("id", "id"),
    ("status", "status"),
    ("kind", "kind"),
    ("value", "value"),
    ("digest", "digest"),
    ("category", "category"),
    ("hosting country", "hosting_country"),
    ("evidence", "evidence"),
    ("notes", "notes"),
    ("added by", "added_by"),
    ("created", "created"),
    ("approved by", "approved_by"),
    ("approved", "approved"),
    ("review date", "review_date"),
    ("delisting requested by", "delist_requested_by"),
    ("delisting requested", "delist_requested"),
    ("delisting reason", "delist_request_reason"),
    ("delisted", "delisted"),
    ("delisted by", "delisted_by"),
    ("reason", "status_reason"),
    ("batch", "batch_id"),
    ("listed in serial", "listed_serial"),
    ("delisted in serial", "delisted_serial"),
)


def _entry_fields(entry: dict) -> str:
    pairs = []
    for label, key in ENTRY_FIELDS:
        value = entry.get(key)
        if key == "notes" and not value:
            continue
        if key == "delist_requested_by" and value and entry.get("delist_pending"):
            value += " (awaiting confirmation by another approver)"
        pairs.append((label, iso(value) if key in TIME_FIELDS | {"delist_requested"} else value))
    return fields(pairs)


def entry_call(args: argparse.Namespace, path: str, body: Any, done: Callable[[dict], str]) -> int:
    return reply(args, client(args).call("POST", path, body), done)


def _added(e: dict) -> str:
    if e["status"] == "takedown":
        return (
            f"Entry {e['id']} added: {e['kind']} {e['value']} (takedown: hosted at home, it is "
            f"taken down, not blocked; record the notice with `blocklist takedown {e['id']}`)."
        )
    return (
        f"Entry {e['id']} added: {e['kind']} {e['value']} ({e['status']}; "
        "another approver must approve it)."
    )


def cmd_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "value": args.value,
        "hosting_country": args.country,
        "evidence": args.evidence,
    }
    if args.kind:
        body["kind"] = args.kind
    if args.category:
        body["category"] = args.category
    if args.notes:
        body["notes"] = args.notes
    return entry_call(
        args,
        "/v1/entries",
        body,
        _added,
    )


def cmd_approve(args: argparse.Namespace) -> int:
    return entry_call(
        args,
        f"/v1/entries/{args.id}/approve",
        None,
        lambda e: (
            f"Entry {e['id']} approved: {e['value']} is {e['status']} "
            "(blocked from the next publication)."
        ),
    )


def cmd_reject(args: argparse.Namespace) -> int:
    return entry_call(
        args,
        f"/v1/entries/{args.id}/reject",
        {"reason": args.reason},
        lambda e: f"Entry {e['id']} rejected: {e['value']}.",
    )


DELIST_USAGE = (
    "blocklist delist ID --reason R | delist confirm ID [--note N] | delist reject ID --reason R"
)


def cmd_delist(args: argparse.Namespace) -> int:
    """`delist ID` requests; `delist confirm ID` and `delist reject ID` decide a request."""
    first, second = args.target, args.id
    action = first if first in ("confirm", "reject") else "request"
    text = second if action != "request" else first
    if text is None or (action == "request" and second is not None):
        raise CliError(f"usage: {DELIST_USAGE}", 2)
    try:
        eid = entry_id(text)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"entry id {text[:40]!r}: {exc}; usage: {DELIST_USAGE}", 2) from None
    if action != "confirm" and not args.reason:
        raise CliError(f"a reason is required (--reason); usage: {DELIST_USAGE}", 2)
    if action == "request":
        return entry_call(
            args,
            f"/v1/entries/{eid}/delist",
            {"reason": args.reason},
            lambda e: (
                f"Delisting of entry {e['id']} requested: {e['value']} stays {e['status']} "
                "(blocked) until another approver confirms it "
                f"(blocklist delist confirm {e['id']})."
            ),
        )
    if action == "confirm":
        return entry_call(
            args,
            f"/v1/entries/{eid}/delist/confirm",
            {"note": args.note or ""},
            lambda e: (
                f"Entry {e['id']} delisted: {e['value']} (requested by "
                f"{e['delist_requested_by']}; unblocked from the next publication)."
            ),
        )
    return entry_call(
        args,
        f"/v1/entries/{eid}/delist/reject",
        {"reason": args.reason},
        lambda e: f"Delisting of entry {e['id']} rejected: {e['value']} stays {e['status']}.",
    )


def cmd_show(args: argparse.Namespace) -> int:
    return reply(args, client(args).call("GET", f"/v1/entries/{args.id}"), _entry_fields)


def cmd_list(args: argparse.Namespace) -> int:
    query = {"status": args.status, "q": args.search, "limit": args.limit, "offset": args.offset}
    data = client(args).call("GET", "/v1/entries", query=query)
    if args.json:
        print_json(data)
        return 0
    entries = data["entries"]
    if not entries:
        print("No entries match.")
        return 0
    rows = [
        [
            e["id"],
            e["status"] + (" (delist requested)" if e.get("delist_pending") else ""),
            e["kind"],
            e["value"],
            e["hosting_country"],
            e["added_by"],
            e.get("approved_by"),
            e.get("batch_id"),
            iso(e.get("created")),
        ]
        for e in entries
    ]
    headers = ["id", "status", "kind", "value", "country", "added by", "approved by", "batch"]
    print(table([*headers, "created"], rows))
    if len(entries) == args.limit:
        print(f"(first {args.limit} shown; use --limit or --offset for more)")
    return 0


def register(cmds: Commands) -> None:
    p = cmds.add("add", "Add an entry (pending until another approver approves it).", cmd_add)
    p.add_argument("value", help="domain or URL")
    p.add_argument("--country", required=True, metavar="CC", help="hosting country (ISO code)")
    p.add_argument("--evidence", required=True, metavar="REF", help="evidence reference")
    p.add_argument("--kind", choices=("domain", "url"), help="default: guessed from the value")
    p.add_argument("--category", help="default: csam")
    p.add_argument("--notes", help="free text, kept at the authority")

    p = cmds.add("approve", "Approve another officer's pending entry.", cmd_approve)
    p.add_argument("id", type=entry_id)
    p = cmds.add("reject", "Reject a pending entry, with a reason.", cmd_reject)
    p.add_argument("id", type=entry_id)
    p.add_argument("--reason", required=True)
    p = cmds.add(
        "delist",
        "Request a delisting, with a reason; another approver confirms or rejects it.",
        cmd_delist,
    )
    p.usage = DELIST_USAGE
    p.add_argument("target", metavar="ID | confirm | reject", help="entry id, or the decision")
    p.add_argument("id", nargs="?", metavar="ID", help="entry id (after confirm or reject)")
    p.add_argument("--reason", help="why (required to request or reject)")
    p.add_argument("--note", help="an optional note when confirming")
    p = cmds.add("show", "Show one entry.", cmd_show)
    p.add_argument("id", type=entry_id)

    p = cmds.add("list", "List or search entries.", cmd_list)
    p.add_argument(
        "--status", choices=ENTRY_FILTERS, help="delist_pending: delistings awaiting confirmation"
    )
    p.add_argument("--search", metavar="Q", help="text in the value or evidence reference")
    p.add_argument("--limit", type=positive, default=100)
    p.add_argument("--offset", type=int, default=0)
