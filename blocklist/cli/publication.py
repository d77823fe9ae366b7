"""`publish`, `status` and `compliance`: the published list and who applied it."""

from __future__ import annotations

import argparse

from blocklist.authority.statuses import ENTRY_STATUSES as STATUSES
from blocklist.cli.client import client
from blocklist.cli.parsing import Commands
from blocklist.cli.rendering import fields, iso, print_json, reply, table


def cmd_publish(args: argparse.Namespace) -> int:
    return reply(args, client(args).call("POST", "/v1/publish"), _published)


def _published(data: dict) -> str:
    if not data.get("changed"):
        return f"Nothing to publish; serial {data['serial']} ({data.get('entries')} entries)."
    bulk = " (marked as a deliberate bulk change)" if data.get("bulk_change") else ""
    return (
        f"Published serial {data['serial']}: {data.get('added', 0)} added, "
        f"{data.get('removed', 0)} removed, {data.get('entries')} entries on the list{bulk}."
    )


def cmd_status(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/status")
    if args.json:
        print_json(data)
        return 0
    counts = data.get("entries_by_status") or {}
    pending = data.get("pending_publication") or {}
    print(
        fields(
            [
                ("authority", data.get("authority")),
                ("list id", data.get("list_id")),
                ("serial", data.get("serial")),
                ("session", data.get("session")),
                ("published at", iso(data.get("published_at"))),
                ("entries published", data.get("entries_published")),
                ("checksum", data.get("checksum")),
                ("entries", ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES)),
                ("delistings to confirm", data.get("delist_pending", 0)),
                (
                    "to publish",
                    f"{pending.get('added', 0)} added, {pending.get('removed', 0)} removed",
                ),
                ("signing key expires", iso(data.get("signing_key_expires"))),
            ]
        )
    )
    return 0


def cmd_compliance(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/compliance")
    if args.json:
        print_json(data)
        return 0
    hours = data.get("deadline", 0) / 3600
    print(
        f"Newest serial {data.get('newest_serial')}; an ASP is overdue when a serial older than "
        f"{hours:g} h is not applied."
    )
    instances = data.get("instances") or []
    if not instances:
        print("No ASPs registered.")
        return 0
    rows = [
        [
            i["asp"],
            i.get("instance"),
            i.get("serial"),
            i.get("lag"),
            i.get("divergent"),
            i.get("overdue"),
            i.get("held") or 0,
            ", ".join(map(str, i.get("alarms") or [])) or "-",
            iso(i.get("last_seen")),
        ]
        for i in instances
    ]
    headers = ["asp", "instance", "serial", "lag", "divergent", "overdue", "held", "alarms"]
    print(table([*headers, "last seen"], rows))
    troubled = [i for i in instances if i.get("held") or i.get("alarms")]
    if troubled:
        print(
            f"{len(troubled)} instance(s) hold an update or raise an alarm: see their sync "
            "status (docs/operators.md) before publishing more."
        )
    return 0


def register(cmds: Commands) -> None:
    cmds.add("publish", "Publish the approved changes as the next serial.", cmd_publish)
    cmds.add("status", "Show the serial, entry counts and signing key expiry.", cmd_status)
    cmds.add("compliance", "Show which serial each ASP instance has applied.", cmd_compliance)
