"""`import` a file as one batch, and `batch` show/accept/reject."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from blocklist.cli.client import IMPORT_TIMEOUT, TOKEN_HINT, client
from blocklist.cli.errors import ApiError, CliError
from blocklist.cli.importing import CSV_COLUMNS, Line, Refusal, progress, read_csv, read_text
from blocklist.cli.parsing import Commands, entry_id
from blocklist.cli.rendering import TIME_FIELDS, fields, iso, print_json, reply, say, shorten, table


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "text")
    country, evidence = args.country or "", args.evidence or ""
    if fmt == "text" and not (country and evidence):
        raise CliError("a text import needs --country and --evidence (they apply to every line)", 2)
    c = client(args)
    if not c.token:
        raise CliError("no token given", 1, [TOKEN_HINT])
    lines: list[Line] = []
    refused: list[Refusal] = []
    try:
        with open(path, "rb") as f, progress(path, args) as bar:
            if fmt == "csv":
                items = read_csv(iter(f), bar, country, evidence, str(path))
            else:
                items = read_text(iter(f), bar, country, evidence)
            for item in items:
                (lines if isinstance(item, Line) else refused).append(item)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    except csv.Error as exc:
        raise CliError(f"{path}: not a readable CSV file: {exc}", 2) from None
    local_refusals = len(refused)
    if lines:
        if not args.json and sys.stderr.isatty():
            say(f"sending {len(lines)} lines to the authority…")
        body = {
            "source": args.source or path.name,
            # File line numbers, so the API's messages ("repeats line 7") cite the file.
            "lines": [{**ln.entry, "line": ln.number} for ln in lines],
            "refused_by_client": local_refusals,
        }
        try:
            report = c.call("POST", "/v1/batches", body, timeout=IMPORT_TIMEOUT)
        except ApiError as exc:
            if exc.status == 413:
                exc.hints.append("hint: split the file and import the parts as separate batches")
            raise
    else:
        report = {"batch_id": None, "accepted": 0, "refused": []}
    # The API reports refusals by the file line numbers sent with each line.
    by_number = {ln.number: ln for ln in lines}
    for r in report.get("refused", []):
        number = r.get("line", 0)
        source = by_number.get(number)
        refused.append(
            Refusal(
                number,
                r.get("input", source.text if source else ""),
                r.get("reason", ""),
                r.get("message", ""),
            )
        )
    refused.sort(key=lambda r: r.line)
    read = len(lines) + local_refusals
    accepted = int(report.get("accepted") or 0)
    if args.json:
        print_json({**report, "refused": [r.to_dict() for r in refused]})
        if not accepted:
            say(f"error: nothing was accepted from {path} ({read} lines read).")
        return 0 if accepted else 1
    if report.get("batch_id") is not None:
        print(
            f"Batch {report['batch_id']}: {accepted} of {read} lines accepted, pending until "
            f"another approver runs `blocklist batch accept {report['batch_id']}`."
        )
        if report.get("takedown"):
            print(
                f"{report['takedown']} of them are hosted at home: they are tracked as takedowns "
                "and will not be blocked."
            )
    else:
        say(f"error: nothing was accepted from {path} ({read} lines read).")
    if refused:
        print(f"{len(refused)} lines refused:")
        rows = [[r.line, shorten(r.input), r.reason, r.message] for r in refused]
        print(table(["line", "input", "reason", "message"], rows))
    return 0 if accepted else 1


BATCH_FIELDS = (
    ("id", "id"),
    ("status", "status"),
    ("size", "size"),
    ("source", "source"),
    ("created", "created"),
    ("decided", "decided"),
    ("reason", "reason"),
)


def _batch_fields(batch: dict) -> str:
    return fields(
        [
            (label, iso(batch.get(k)) if k in TIME_FIELDS else batch.get(k))
            for label, k in BATCH_FIELDS
        ]
    )


def cmd_batch_show(args: argparse.Namespace) -> int:
    return reply(args, client(args).call("GET", f"/v1/batches/{args.id}"), _batch_fields)


def cmd_batch_accept(args: argparse.Namespace) -> int:
    try:
        data = client(args).call(
            "POST", f"/v1/batches/{args.id}/accept", {"confirm_large": args.confirm_large}
        )
    except ApiError as exc:
        if exc.data.get("error") == "confirmation_required":
            exc.hints.append(
                f"hint: this is a large change; if it is intended, re-run "
                f"`blocklist batch accept {args.id} --confirm-large`"
            )
        raise
    return reply(args, data, _accepted)


def _accepted(batch: dict) -> str:
    counts = batch.get("entries_by_status") or {}
    active, takedown = counts.get("active", 0), counts.get("takedown", 0)
    text = f"Batch {batch['id']} accepted: {active} entries are active"
    if active:
        text += " (blocked from the next publication)"
    if takedown:
        text += f"; {takedown} hosted at home stay in takedown (not blocked)"
    others = {s: n for s, n in counts.items() if s not in ("active", "takedown")}
    if others:
        text += "; " + ", ".join(f"{n} {s}" for s, n in sorted(others.items()))
    return text + "."


def cmd_batch_reject(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/batches/{args.id}/reject", {"reason": args.reason})
    return reply(
        args,
        data,
        lambda b: f"Batch {b['id']} rejected: its {b['size']} entries will not be listed.",
    )


def register(cmds: Commands) -> None:
    p = cmds.add("import", "Import many entries from a CSV or text file as one batch.", cmd_import)
    p.add_argument("file", help=f"CSV with header {','.join(CSV_COLUMNS)}, or one value a line")
    p.add_argument("--format", choices=("csv", "text"), help="default: csv for *.csv, else text")
    p.add_argument("--country", metavar="CC", help="hosting country for lines without one")
    p.add_argument("--evidence", metavar="REF", help="evidence reference for lines without one")
    p.add_argument("--source", metavar="LABEL", help="label of the batch (default: file name)")

    batch = Commands(cmds.add("batch", "Show, accept or reject an imported batch."), "batch")
    p = batch.add("show", "Show a batch.", cmd_batch_show)
    p.add_argument("id", type=entry_id)
    p = batch.add("accept", "Accept a batch imported by another officer.", cmd_batch_accept)
    p.add_argument("id", type=entry_id)
    p.add_argument(
        "--confirm-large",
        action="store_true",
        help="confirm a batch larger than the configured share of the list",
    )
    p = batch.add("reject", "Reject a batch, with a reason.", cmd_batch_reject)
    p.add_argument("id", type=entry_id)
    p.add_argument("--reason", required=True)
