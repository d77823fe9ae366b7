"""An entry's life after approval: takedown, liveness, review, removal, report."""

from __future__ import annotations

import argparse

from blocklist.cli.client import client
from blocklist.cli.entries import entry_call
from blocklist.cli.parsing import Commands, entry_id, positive
from blocklist.cli.rendering import iso, print_json, reply, reply_rows, table


def cmd_takedown(args: argparse.Namespace) -> int:
    body = {"recipient": args.recipient, "sent": args.sent}
    data = client(args).call("POST", f"/v1/entries/{args.id}/takedown", body)
    return reply(
        args,
        data,
        lambda d: (
            f"Takedown notice for entry {args.id} to {d['recipient']}; "
            f"deadline {iso(d['deadline'])}."
        ),
    )


def cmd_escalate(args: argparse.Namespace) -> int:
    return entry_call(
        args,
        f"/v1/entries/{args.id}/escalate",
        {"reason": args.reason},
        lambda e: f"Entry {e['id']} is pending: another approver must approve it for blocking.",
    )


def cmd_partner_notice(args: argparse.Namespace) -> int:
    body = {"partner": args.partner, "reference": args.reference or ""}
    data = client(args).call("POST", f"/v1/entries/{args.id}/partner-notice", body)
    return reply(args, data, lambda _: f"Recorded notice to {args.partner}.")


def cmd_confirm_removal(args: argparse.Namespace) -> int:
    return entry_call(
        args,
        f"/v1/entries/{args.id}/confirm-removal",
        None,
        lambda e: f"Entry {e['id']} is delisted (removed at source).",
    )


def cmd_reverify(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/entries/{args.id}/reverify", {"note": args.note or ""})
    return reply(
        args, data, lambda d: f"Entry {args.id} re-verified; next review {iso(d['review_date'])}."
    )


def cmd_checks(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/v1/entries/{args.id}/checks", query={"limit": args.limit})
    return reply_rows(
        args,
        data,
        ["time", "outcome", "detail", "redirect"],
        lambda d: [
            [iso(c["time"]), c["outcome"], c["detail"], c.get("redirect") or ""]
            for c in d["checks"]
        ],
        "No checks yet.",
    )


def cmd_lifecycle_run(args: argparse.Namespace) -> int:
    data = client(args).call("POST", "/v1/lifecycle/run")

    def checked(d: dict) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(d["outcomes"].items())) or "none"
        moves = ", ".join(f"{k} {v}" for k, v in sorted(d["transitions"].items())) or "none"
        return f"Checked {d['checked']} entries ({outcomes}); transitions: {moves}."

    return reply(args, data, checked)


def cmd_review(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/review")
    return reply_rows(
        args,
        data,
        ["entry", "review date", "lapses", "last check"],
        lambda d: [
            [e["id"], iso(e["review_date"]), iso(e["lapses"]), e.get("last_outcome") or "-"]
            for e in d["entries"]
        ],
        "No entry is past its review date.",
    )


def cmd_report(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/report")
    if args.json:
        print_json(data)
        return 0
    sections = [
        ("Entries by status", data["entries_by_status"]),
        ("Delisted by cause", data["delisted_by_cause"]),
        ("Listed by hosting country", data["listed_by_hosting_country"]),
        ("Listed by age", data["listed_by_age"]),
        ("Complaints by status", data["complaints_by_status"]),
    ]
    for title, counts in sections:
        print(f"{title}:")
        rows = [[k, v] for k, v in counts.items()]
        print(table(["", "count"], rows) if rows else "  none")
        print()
    print("Time to removal at source, by month:")
    rows = [
        [m, v["removed"], v["median_hours"], v["p90_hours"]]
        for m, v in data["time_to_removal_by_month"].items()
    ]
    print(table(["month", "removed", "median h", "p90 h"], rows) if rows else "  none")
    feeds = data.get("feeds") or {}
    if feeds:
        print()
        print("Per feed:")
        rows = [
            [name, c.get("linked", 0), c.get("listed", 0), c.get("held", 0), c.get("excluded", 0)]
            for name, c in feeds.items()
        ]
        print(table(["feed", "items", "listed", "held", "excluded"], rows))
    return 0


def register(cmds: Commands) -> None:
    p = cmds.add("takedown", "Record the takedown notice of an entry hosted at home.", cmd_takedown)
    p.add_argument("id", type=entry_id)
    p.add_argument("--recipient", required=True, help="who was notified (hosting provider)")
    p.add_argument("--sent", type=int, metavar="UNIX", help="when it was sent (default: now)")
    p = cmds.add("escalate", "Send a home-hosted entry still online to approval.", cmd_escalate)
    p.add_argument("id", type=entry_id)
    p.add_argument("--reason", required=True)
    p = cmds.add("partner-notice", "Record a notice to a partner hotline.", cmd_partner_notice)
    p.add_argument("id", type=entry_id)
    p.add_argument("--partner", required=True)
    p.add_argument("--reference")
    p = cmds.add("confirm-removal", "Confirm removal at source (delists).", cmd_confirm_removal)
    p.add_argument("id", type=entry_id)
    p = cmds.add("reverify", "Record a re-verification: a new review date.", cmd_reverify)
    p.add_argument("id", type=entry_id)
    p.add_argument("--note")
    p = cmds.add("checks", "Show an entry's liveness check history.", cmd_checks)
    p.add_argument("id", type=entry_id)
    p.add_argument("--limit", type=positive, default=20)
    lifecycle = Commands(cmds.add("lifecycle", "Run the lifecycle on demand."), "lifecycle")
    lifecycle.add(
        "run", "Run due liveness checks and lapse overdue entries now.", cmd_lifecycle_run
    )
    cmds.add("review", "List entries past their review date.", cmd_review)
    cmds.add("report", "Counts, time to removal and complaints (no list values).", cmd_report)
