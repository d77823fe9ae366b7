"""`complaints` list/show/decide: complaints forwarded by stop pages."""

from __future__ import annotations

import argparse

from blocklist.cli.client import client
from blocklist.cli.parsing import Commands, positive
from blocklist.cli.rendering import fields, iso, reply, reply_rows, shorten


def cmd_complaints_list(args: argparse.Namespace) -> int:
    data = client(args).call(
        "GET", "/v1/complaints", query={"status": args.status, "limit": args.limit}
    )
    headers = ["id", "ticket", "status", "entry", "host", "role", "asp", "received", "reason"]
    return reply_rows(
        args,
        data,
        headers,
        lambda d: [_complaint_row(c) for c in d.get("complaints") or []],
        "No complaints.",
    )


def _complaint_row(c: dict) -> list:
    return [
        c["complaint_id"],
        c.get("ticket"),
        c.get("status"),
        c.get("entry_id"),
        c.get("host"),
        c.get("role"),
        c.get("asp"),
        iso(c.get("created")),
        shorten(c.get("reason") or "", 40),
    ]


def _complaint_fields(c: dict) -> str:
    return fields(
        [
            ("complaint", c.get("complaint_id")),
            ("visitor's ticket", c.get("ticket")),
            ("status", c.get("status")),
            ("entry", c.get("entry_id")),
            ("host", c.get("host")),
            ("role", c.get("role")),
            ("from ASP", c.get("asp")),
            ("language", c.get("language")),
            ("contact", c.get("contact") or "-"),
            ("received", iso(c.get("received"))),
            ("reason", c.get("reason")),
            ("decided by", c.get("decided_by") or "-"),
            ("decided", iso(c.get("decided"))),
            ("decision reasons", c.get("decision_reasons") or "-"),
        ]
    )


def cmd_complaints_show(args: argparse.Namespace) -> int:
    return reply(args, client(args).call("GET", f"/v1/complaints/{args.id}"), _complaint_fields)


def cmd_complaints_decide(args: argparse.Namespace) -> int:
    body = {"decision": args.decision, "reasons": args.reasons}
    data = client(args).call("POST", f"/v1/complaints/{args.id}/decide", body)

    def decided(c: dict) -> str:
        text = f"Complaint {c['complaint_id']} {c['status']}."
        if c["status"] == "upheld" and c.get("entry_id") is not None:
            text += f"\nEntry {c['entry_id']} is delisted; the next publication lifts the block."
        return text

    return reply(args, data, decided)


def register(cmds: Commands) -> None:
    complaints = Commands(
        cmds.add("complaints", "Read and decide complaints from stop pages."), "complaints"
    )
    p = complaints.add("list", "List complaints, newest first.", cmd_complaints_list)
    p.add_argument("--status", choices=("received", "upheld", "rejected"))
    p.add_argument("--limit", type=positive, default=100)
    p = complaints.add("show", "Show one complaint.", cmd_complaints_show)
    p.add_argument("id", help="complaint id (C-…) or the visitor's ticket (T-…)")
    p = complaints.add(
        "decide",
        "Decide a complaint with written reasons (never on your own entries).",
        cmd_complaints_decide,
    )
    p.add_argument("id", help="complaint id (C-…) or the visitor's ticket (T-…)")
    p.add_argument("decision", choices=("upheld", "rejected"))
    p.add_argument("--reasons", required=True, help="shown to the person who complained")
