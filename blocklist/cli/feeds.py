"""`feed` add/confirm/list/show/refresh/exclude/import: external lists with their own trust."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from blocklist.cli.client import IMPORT_TIMEOUT, client
from blocklist.cli.errors import ApiError, CliError
from blocklist.cli.importing import progress
from blocklist.cli.parsing import Commands
from blocklist.cli.rendering import fields, iso, print_json, reply, reply_rows, say, shorten, table

CHUNK = 1 << 20


def _text_arg(value: str | None, what: str) -> str:
    """A key given inline or as @FILE."""
    if not value or not value.startswith("@"):
        return value or ""
    try:
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {what} from {value[1:]}: {exc}", 2) from None


def cmd_add(args: argparse.Namespace) -> int:
    token = _text_arg(args.partner_token, "the partner token")
    body = {
        "name": args.name,
        "source": args.source,
        "format": args.format or ("cordon" if args.source == "cordon" else "text"),
        "policy": args.policy,
        "url": args.feed_url or "",
        "period_hours": args.period_hours,
        "cert_sha256": args.cert_sha256 or "",
        "public_key": _text_arg(args.public_key, "the public key"),
        "signature_url": args.signature_url or "",
        "roots": [_text_arg(r, "the root key") for r in args.root or []],
        "list_id": args.list_id,
        "edition": args.edition,
        "token": token,
        "max_bytes": args.max_bytes,
    }
    return reply(args, client(args).call("POST", "/v1/feeds", body), _added)


def _added(feed: dict) -> str:
    text = f"Feed {feed['name']} added ({feed['source']}, {feed['format']}, {feed['policy']})."
    if feed["policy"] == "trusted":
        text += (
            "\nIts batches wait for an approver until another admin or oversight officer "
            f"runs `blocklist feed confirm {feed['name']}`."
        )
    return text


def _row(feed: dict) -> list:
    counts = feed.get("counts") or {}
    return [
        feed["name"],
        feed["source"],
        feed["policy"],
        counts.get("linked", 0),
        counts.get("listed", 0),
        counts.get("held", 0),
        counts.get("excluded", 0),
        iso(feed.get("last_refresh")),
        "STALE" if feed.get("stale") else "fresh",
        shorten(feed.get("last_error") or ""),
    ]


HEAD = ["feed", "source", "policy", "items", "listed", "held", "excluded", "refreshed", "", "error"]


def cmd_list(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/feeds")
    return reply_rows(args, data, HEAD, lambda d: [_row(f) for f in d["feeds"]], "No feeds.")


def cmd_show(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/v1/feeds/{args.name}")
    if args.json:
        print_json(data)
        return 0
    print(table(HEAD, [_row(data)]))
    trust = data.get("trust") or {}
    print(fields([("url", data.get("url") or "(imported out of band)"), *sorted(trust.items())]))
    if data.get("held"):
        print("Held by the rails:")
        print(
            table(
                ["value", "feed id", "reason"],
                [[h["value"], h["ref"], h["reason"]] for h in data["held"]],
            )
        )
    if data.get("exclusions"):
        print("Excluded:")
        rows = [
            [x["value"], x["reason"], x["excluded_by"], iso(x["time"])] for x in data["exclusions"]
        ]
        print(table(["value", "reason", "by", "when"], rows))
    return 0


def _print_update(args: argparse.Namespace, name: str, data: dict) -> None:
    if args.json:
        print_json(data)
        return
    if not data.get("changed"):
        print(f"Feed {name}: nothing new.")
        return
    text = (
        f"Feed {name}: {data['items']} items; {data['added']} added, {data['removed']} removed, "
        f"{data['linked']} already listed, {len(data['held'])} held by the rails, "
        f"{data['delisted']} delisted."
    )
    print(text)
    if data.get("batch_id") is not None:
        if data["batch_status"] == "accepted":
            print(f"Batch {data['batch_id']} accepted automatically (trusted feed).")
        else:
            print(
                f"Batch {data['batch_id']} is pending until another approver runs "
                f"`blocklist batch accept {data['batch_id']}`."
            )
    if data.get("held"):
        rows = [[h["line"], shorten(h["input"]), h["reason"]] for h in data["held"]]
        print(table(["line", "input", "held: reason"], rows))
    if data.get("refused"):
        print(f"{len(data['refused'])} lines refused:")
        rows = [
            [r["line"], shorten(r["input"]), r["reason"], r["message"]] for r in data["refused"]
        ]
        print(table(["line", "input", "reason", "message"], rows))


def cmd_refresh(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/feeds/{args.name}/refresh", timeout=IMPORT_TIMEOUT)
    _print_update(args, args.name, data)
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/feeds/{args.name}/confirm")
    return reply(
        args, data, lambda d: f"Feed {d['name']} confirmed; its {d['policy']} policy is in effect."
    )


def cmd_exclude(args: argparse.Namespace) -> int:
    body = {"value": args.value, "reason": args.reason}
    data = client(args).call("POST", f"/v1/feeds/{args.name}/exclusions", body)

    def excluded(d: dict) -> str:
        text = f"{d['value']} excluded from feed {args.name}"
        request = d.get("delist_request")
        if request:
            text += (
                f"; delisting of entry {request['entry_id']} requested, until another approver"
                " confirms it"
            )
        return text + (" and withdrawn." if d["delisted"] else ".")

    return reply(args, data, excluded)


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not args.sha256:
        raise CliError("give the file's SHA-256 as published by its provider (--sha256)", 2)
    c = client(args)
    digest = hashlib.sha256()
    parts: list[bytes] = []
    try:
        with open(path, "rb") as f, progress(path, args) as bar:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                parts.append(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    expected = args.sha256.strip().lower()
    if digest.hexdigest() != expected:
        raise CliError(
            f"{path}: checksum mismatch: the file's SHA-256 is {digest.hexdigest()}, "
            f"not {expected}; nothing was sent",
            1,
        )
    if not args.json and sys.stderr.isatty():
        say(f"sending {path.name} to the authority…")
    try:
        data = c.call(
            "POST",
            f"/v1/feeds/{args.feed}/import",
            query={"sha256": expected},
            raw=b"".join(parts),
            timeout=IMPORT_TIMEOUT,
        )
    except ApiError as exc:
        if exc.status == 413:
            exc.hints.append("hint: the file is larger than the authority's api.max_import_bytes")
        raise
    _print_update(args, args.feed, data)
    return 0


def register(cmds: Commands) -> None:
    feed = Commands(
        cmds.add("feed", "External lists (partner authorities, international, hotline)."), "feed"
    )
    p = feed.add("add", "Subscribe to a feed, with its own trust and policy.", cmd_add)
    p.add_argument("name", help="a short name: a-z, 0-9, '.', '_', '-'")
    p.add_argument("--source", required=True, choices=("cordon", "https", "file"))
    p.add_argument("--format", choices=("text", "csv", "cordon"), help="default: cordon or text")
    p.add_argument(
        "--policy",
        choices=("review", "trusted"),
        default="review",
        help="review: an approver accepts each batch; trusted: accepted automatically",
    )
    p.add_argument("--feed-url", help="the file's URL, or the partner's notification URL")
    p.add_argument(
        "--period-hours",
        type=float,
        default=24,
        help="expected refresh period; a feed older than this is stale (alarm)",
    )
    p.add_argument("--cert-sha256", help="pin the HTTPS server's certificate (SHA-256 of DER)")
    p.add_argument("--public-key", help="minisign public key (text or @FILE) for .minisig files")
    p.add_argument("--signature-url", help="where the detached signature is (default URL.minisig)")
    p.add_argument("--root", action="append", help="partner's pinned root key (text or @FILE)")
    p.add_argument("--list-id", default="national", help="partner's list id")
    p.add_argument(
        "--edition",
        choices=("hashed", "plain"),
        default="hashed",
        help="partner edition granted to this authority",
    )
    p.add_argument("--partner-token", help="ASP token the partner issued (text or @FILE)")
    p.add_argument("--max-bytes", type=int, default=0, help="largest file accepted")
    feed.add("list", "List feeds with their counts and freshness.", cmd_list)
    p = feed.add("show", "Show a feed: trust, state, held items, exclusions.", cmd_show)
    p.add_argument("name")
    p = feed.add(
        "confirm",
        "Confirm a feed another admin added (a trusted policy takes effect only then).",
        cmd_confirm,
    )
    p.add_argument("name")
    p = feed.add("refresh", "Fetch and verify a feed now.", cmd_refresh)
    p.add_argument("name")
    p = feed.add("exclude", "Never list a value from this feed (with a reason).", cmd_exclude)
    p.add_argument("name")
    p.add_argument("value")
    p.add_argument("--reason", required=True)
    p = feed.add("import", "Import a file delivered out of band, with its checksum.", cmd_import)
    p.add_argument("file")
    p.add_argument("--feed", required=True, help="the file feed it belongs to")
    p.add_argument("--sha256", help="the file's SHA-256 as its provider published it")
