"""The `blocklist` command: set up and run the authority, and drive its API as an officer.

Offline commands work on the files named by authority.toml (`init`, `serve`,
`audit verify --config`). Every other command talks to the authority's HTTP API at `--url`
(env CORDON_URL) with the officer's bearer token (`--token`/CORDON_TOKEN or
`--token-file`/CORDON_TOKEN_FILE). Output is for people by default; `--json` prints the API's
JSON instead.

Exit status: 0 done, 1 refused or failed (API error, broken audit chain, nothing imported),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8440"
ROLES = ("officer", "approver", "oversight", "admin")
STATUSES = ("pending", "active", "rejected", "delisted")
CSV_COLUMNS = ("value", "kind", "hosting_country", "evidence", "category", "notes")
TOKEN_HINT = (
    "hint: set CORDON_TOKEN (or CORDON_TOKEN_FILE, --token, --token-file) to a valid officer token"
)
# Field limits of the API's EntryIn model. A line breaking them would make the API refuse the
# whole batch with one 422, so the CLI refuses such lines itself, with their line numbers.
MAX_VALUE = 8192
MAX_EVIDENCE = 2000
MAX_CATEGORY = 100
MAX_NOTES = 2000
TIMEOUT = 60.0
IMPORT_TIMEOUT = 900.0


class CliError(Exception):
    """A refusal to show as `error: <message>` (plus optional hint lines); exit with `code`."""

    def __init__(self, message: str, code: int = 1, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.hints = list(hints)


class ApiError(CliError):
    """The API answered with an error status; `data` is its JSON body."""

    def __init__(self, status: int, data: dict, hints: Sequence[str] = ()) -> None:
        message = str(data.get("message") or data.get("error") or f"HTTP {status}")
        super().__init__(message, 1, hints)
        self.status = status
        self.data = data


# ---------------------------------------------------------------- output helpers


def iso(t: float | int | None) -> str:
    """A Unix time as ISO 8601 UTC, or "-"."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return " ".join(str(value).split()) if "\n" in str(value) else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table: one header line, a rule, then the rows; widths from content."""
    grid = [list(headers), *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in grid) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(grid[0]), line(["-" * w for w in widths])]
    out += [line(r) for r in grid[1:]]
    return "\n".join(out)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """Aligned `name  value` lines for one object."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}".rstrip() for k, v in pairs)


def shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def say(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------- API client


class Client:
    """A minimal JSON client for the authority API over urllib."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        if not self.token:
            raise CliError("no token given", 1, [TOKEN_HINT])
        url = self.url + path
        if query:
            params = {k: v for k, v in query.items() if v is not None}
            if params:
                url += "?" + urllib.parse.urlencode(params)
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None or method == "POST":
            data = json.dumps(body if body is not None else {}, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise CliError(f"cannot reach the authority at {self.url}: {text}") from None
        except TimeoutError:
            raise CliError(
                f"the authority at {self.url} did not answer within {timeout:.0f} seconds"
            ) from None
        except OSError as exc:  # connection reset, remote closed, ...
            text = exc.strerror or str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the authority at {self.url}: {text}") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CliError(
                f"the authority at {self.url} answered with something not JSON"
            ) from None

    def _api_error(self, exc: urllib.error.HTTPError) -> ApiError:
        try:
            data = json.loads(exc.read())
            if not isinstance(data, dict):
                raise ValueError
        except (ValueError, OSError):
            data = {"error": f"http_{exc.code}", "message": f"HTTP {exc.code} {exc.reason}"}
        hints = [TOKEN_HINT] if exc.code == 401 else []
        return ApiError(exc.code, data, hints)


# ---------------------------------------------------------------- offline commands


def _load_authority_config(path: str):
    from blocklist.authority.config import AuthorityConfig
    from blocklist.config import ConfigError, load_config

    try:
        return load_config(Path(path), AuthorityConfig)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def _open_store(path: Path):
    from blocklist.authority.store import Store

    try:
        return Store(path)
    except (sqlite3.Error, RuntimeError) as exc:
        raise CliError(f"cannot open the database {path}: {exc}") from None


def _write_secret(path: Path, text: str) -> None:
    """Create `path` with mode 0600 (refusing to overwrite) and write `text` to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def cmd_init(args: argparse.Namespace) -> int:
    from blocklist.authority import keyring
    from blocklist.authority.store import AuthorityError

    config = _load_authority_config(args.config)
    state = config.authority.state_dir
    token_out = Path(args.token_out) if args.token_out else None
    if token_out is not None and token_out.exists():
        raise CliError(f"{token_out} already exists; choose a new file for the admin token", 2)
    if token_out is not None and not token_out.parent.is_dir():
        raise CliError(f"{token_out.parent} is not a directory; cannot write the token there", 2)
    keys = config.keys_dir
    if (keys / "root.pub").exists() or (keys / "signing.key").exists():
        raise CliError(
            f"the authority in {state} is already initialised (keys exist in {keys})",
            1,
            ["hint: to start over, move the state directory away first"],
        )
    if not state.exists():
        state.mkdir(parents=True)
        os.chmod(state, 0o700)
    store = _open_store(config.database)
    try:
        try:
            # The first admin before the keys: this also checks the name, so a bad name
            # leaves nothing half-made behind.
            token = store.bootstrap_admin(args.admin)
        except AuthorityError as exc:
            if exc.code == "exists":
                raise CliError(
                    f"the authority in {state} is already initialised (officers exist in "
                    f"{config.database})",
                    1,
                    ["hint: to start over, move the state directory away first"],
                ) from None
            raise CliError(str(exc), 2) from None
    finally:
        store.close()
    try:
        root = keyring.ceremony(keys, int(time.time()), config.publication.signing_key_days)
    except OSError as exc:
        raise CliError(
            f"the key ceremony failed: {exc}",
            1,
            [
                f"hint: admin {args.admin} is already in {config.database}; "
                f"move {state} away and run init again"
            ],
        ) from None
    if token_out is not None:
        try:
            _write_secret(token_out, token)
        except OSError as exc:
            say(f"error: cannot write {token_out}: {exc.strerror or exc}; the token follows")
            token_out = None
    if args.json:
        out = {"state_dir": str(state), "root_public_key": root, "admin": args.admin}
        out.update({"token_file": str(token_out)} if token_out else {"token": token})
        print_json(out)
        return 0
    print(f"Initialised the authority in {state}.")
    print()
    print("Root public key (give it to every ASP to pin; keep root.key offline):")
    print(f"  {root}")
    print()
    if token_out is not None:
        print(f"Token of admin {args.admin} written to {token_out} (mode 0600).")
    else:
        print(f"Token of admin {args.admin} (shown once; store it safely):")
        print(f"  {token}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from blocklist.authority import server

    config = _load_authority_config(args.config)
    if not (config.keys_dir / "signing.key").exists():
        raise CliError(
            f"no signing key in {config.keys_dir}: the authority is not initialised",
            2,
            [f"hint: run `blocklist init --config {args.config} --admin NAME` first"],
        )
    host = args.host or config.api.host
    port = args.port or config.api.port
    try:
        server.serve(Path(args.config), args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
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
    config = _load_authority_config(args.config)
    if not config.database.exists():
        raise CliError(f"no database at {config.database}: the authority is not initialised", 2)
    store = _open_store(config.database)
    try:
        report = store.verify_audit()
    except sqlite3.Error as exc:
        raise CliError(f"cannot read the audit log in {config.database}: {exc}") from None
    finally:
        store.close()
    return _print_chain_report(dict(report.__dict__), args)


def cmd_keys_renew(args: argparse.Namespace) -> int:
    """Certify a fresh online signing key with the root key (brought online for this)."""
    from blocklist.authority import keyring
    from signing import SigningError

    config = _load_authority_config(args.config)
    if not (config.keys_dir / "chain.txt").exists():
        raise CliError(f"no keys in {config.keys_dir}: the authority is not initialised", 2)
    root_key = Path(args.root_key) if args.root_key else config.keys_dir / "root.key"
    now = int(time.time())
    days = args.days or config.publication.signing_key_days
    try:
        signer = keyring.new_signing_key(config.keys_dir, root_key, now, days)
    except SigningError as exc:
        raise CliError(f"cannot certify a new signing key: {exc}") from None
    expires = signer.verify(now).expires_soonest()
    if args.json:
        print_json({"expires": expires})
    else:
        print(f"New signing key certified until {iso(expires)}; the running service takes it")
        print("at its next re-signing (within [publication] resign_minutes).")
    return 0


# ---------------------------------------------------------------- API commands


def client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token)


def _show_token(args: argparse.Namespace, what: str, data: dict) -> None:
    token = data.get("token", "")
    if getattr(args, "token_out", None):
        try:
            _write_secret(Path(args.token_out), token)
            data = {**data, "token": None, "token_file": args.token_out}
        except OSError as exc:
            say(f"error: cannot write {args.token_out}: {exc.strerror or exc}; the token follows")
    if args.json:
        print_json(data)
        return
    print(f"{what} created (id {data.get('id')}).")
    if data.get("token_file"):
        print(f"Token written to {data['token_file']} (mode 0600).")
    else:
        print("Token (shown once; hand it over safely):")
        print(f"  {token}")


def _check_token_out(args: argparse.Namespace) -> None:
    if getattr(args, "token_out", None) and Path(args.token_out).exists():
        raise CliError(f"{args.token_out} already exists; choose a new file for the token", 2)


def cmd_officer_add(args: argparse.Namespace) -> int:
    _check_token_out(args)
    data = client(args).call("POST", "/v1/officers", {"name": args.name, "role": args.role})
    _show_token(args, f"Officer {data.get('name')} ({data.get('role')})", data)
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
    _check_token_out(args)
    body = {"name": args.name, "plain_allowed": args.plain}
    data = client(args).call("POST", "/v1/asps", body)
    edition = "plain and hashed editions" if data.get("plain_allowed") else "hashed edition"
    _show_token(args, f"ASP {data.get('name')} ({edition})", data)
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
    ("delisted", "delisted"),
    ("reason", "status_reason"),
    ("batch", "batch_id"),
    ("listed in serial", "listed_serial"),
    ("delisted in serial", "delisted_serial"),
)
TIME_FIELDS = frozenset({"created", "approved", "review_date", "delisted", "decided", "time"})


def _entry_fields(entry: dict) -> str:
    pairs = []
    for label, key in ENTRY_FIELDS:
        value = entry.get(key)
        if key == "notes" and not value:
            continue
        pairs.append((label, iso(value) if key in TIME_FIELDS else value))
    return fields(pairs)


def _entry_call(args: argparse.Namespace, path: str, body: Any, done: Callable[[dict], str]) -> int:
    data = client(args).call("POST", path, body)
    if args.json:
        print_json(data)
    else:
        print(done(data))
    return 0


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
    return _entry_call(
        args,
        "/v1/entries",
        body,
        lambda e: (
            f"Entry {e['id']} added: {e['kind']} {e['value']} ({e['status']}; "
            "another approver must approve it)."
        ),
    )


def cmd_approve(args: argparse.Namespace) -> int:
    return _entry_call(
        args,
        f"/v1/entries/{args.id}/approve",
        None,
        lambda e: (
            f"Entry {e['id']} approved: {e['value']} is {e['status']} "
            "(blocked from the next publication)."
        ),
    )


def cmd_reject(args: argparse.Namespace) -> int:
    return _entry_call(
        args,
        f"/v1/entries/{args.id}/reject",
        {"reason": args.reason},
        lambda e: f"Entry {e['id']} rejected: {e['value']}.",
    )


def cmd_delist(args: argparse.Namespace) -> int:
    return _entry_call(
        args,
        f"/v1/entries/{args.id}/delist",
        {"reason": args.reason},
        lambda e: f"Entry {e['id']} delisted: {e['value']} (unblocked from the next publication).",
    )


def cmd_show(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/v1/entries/{args.id}")
    print_json(data) if args.json else print(_entry_fields(data))
    return 0


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
            e["status"],
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


# ---------------------------------------------------------------- import


@dataclass
class Line:
    """One line of an import file: its line number, what it said, and the entry to send."""

    number: int
    text: str
    entry: dict[str, Any]


@dataclass
class Refusal:
    line: int
    input: str
    reason: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _progress(path: Path, args: argparse.Namespace):
    from tqdm import tqdm

    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        desc=f"reading {path.name}",
        disable=args.json or not sys.stderr.isatty(),
        leave=False,
    )


def _decoded(raw_lines: Iterator[bytes], bar, bad: set[int]) -> Iterator[str]:
    """Decode lines as UTF-8 (a BOM is skipped), noting the numbers of lines that are not."""
    for n, raw in enumerate(raw_lines, start=1):
        bar.update(len(raw))
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(n)
            yield raw.decode("utf-8", errors="replace")


def _entry(
    number: int,
    text: str,
    value: str,
    *,
    kind: str = "",
    country: str = "",
    evidence: str = "",
    category: str = "",
    notes: str = "",
) -> Line | Refusal:
    """Check what the API's request model would refuse for the whole batch; build the entry."""

    def refuse(reason: str, message: str) -> Refusal:
        return Refusal(number, shorten(text, 200), reason, message)

    value, kind, country = value.strip(), kind.strip().lower(), country.strip().upper()
    evidence, category, notes = evidence.strip(), category.strip(), notes.strip()
    if not value:
        return refuse("missing_value", "the line has no value")
    if len(value) > MAX_VALUE:
        return refuse("too_long", f"value is longer than {MAX_VALUE} characters")
    if kind and kind not in ("domain", "url"):
        return refuse("bad_kind", f"unknown entry kind {kind!r} (expected domain or url)")
    if not country:
        return refuse("missing_country", "no hosting country (column or --country)")
    if len(country) != 2:
        return refuse(
            "invalid_country", f"hosting country {country!r} is not an ISO 3166-1 alpha-2 code"
        )
    if not evidence:
        return refuse("missing_evidence", "no evidence reference (column or --evidence)")
    for name, text_value, limit in (
        ("evidence reference", evidence, MAX_EVIDENCE),
        ("category", category, MAX_CATEGORY),
        ("notes", notes, MAX_NOTES),
    ):
        if len(text_value) > limit:
            return refuse("too_long", f"{name} is longer than {limit} characters")
    entry: dict[str, Any] = {"value": value, "hosting_country": country, "evidence": evidence}
    if kind:
        entry["kind"] = kind
    if category:
        entry["category"] = category
    if notes:
        entry["notes"] = notes
    return Line(number, value, entry)


def read_text(
    raw_lines: Iterator[bytes], bar, country: str, evidence: str
) -> Iterator[Line | Refusal]:
    bad: set[int] = set()
    for n, text in enumerate(_decoded(raw_lines, bar, bad), start=1):
        value = text.strip()
        if not value or value.startswith("#"):
            continue
        if n in bad:
            yield Refusal(n, shorten(value, 200), "not_utf8", "the line is not valid UTF-8")
            continue
        yield _entry(n, value, value, country=country, evidence=evidence)


def read_csv(
    raw_lines: Iterator[bytes], bar, country: str, evidence: str, name: str
) -> Iterator[Line | Refusal]:
    bad: set[int] = set()
    reader = csv.reader(_decoded(raw_lines, bar, bad))
    header = next(reader, None)
    if header is None:
        return
    columns = [h.strip().lower() for h in header]
    unknown = [h for h in columns if h not in CSV_COLUMNS]
    if unknown or "value" not in columns or len(set(columns)) != len(columns):
        problem = (
            f"unknown column(s) {', '.join(map(repr, unknown))}"
            if unknown
            else "no 'value' column"
            if "value" not in columns
            else "a column is named twice"
        )
        raise CliError(
            f"{name}: line 1: {problem}; the header must name columns among "
            f"{','.join(CSV_COLUMNS)}",
            2,
        )
    last = reader.line_num
    for row in reader:
        first, last = last + 1, reader.line_num
        if not any(c.strip() for c in row):
            continue
        text = ",".join(row)
        values = dict(zip(columns, row, strict=False))
        shown = values.get("value", "").strip() or text
        if any(n in bad for n in range(first, last + 1)):
            yield Refusal(first, shorten(shown, 200), "not_utf8", "the line is not valid UTF-8")
            continue
        if len(row) > len(columns):
            yield Refusal(
                first,
                shorten(shown, 200),
                "extra_fields",
                f"the line has {len(row)} fields; the header names {len(columns)}",
            )
            continue
        yield _entry(
            first,
            shown,
            values.get("value", ""),
            kind=values.get("kind", ""),
            country=values.get("hosting_country", "").strip() or country,
            evidence=values.get("evidence", "").strip() or evidence,
            category=values.get("category", ""),
            notes=values.get("notes", ""),
        )


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
        with open(path, "rb") as f, _progress(path, args) as bar:
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
        body = {"source": args.source or path.name, "lines": [ln.entry for ln in lines]}
        try:
            report = c.call("POST", "/v1/batches", body, timeout=IMPORT_TIMEOUT)
        except ApiError as exc:
            if exc.status == 413:
                exc.hints.append("hint: split the file and import the parts as separate batches")
            raise
    else:
        report = {"batch_id": None, "accepted": 0, "refused": []}
    # The API numbers lines by their position in the batch; map them back to the file.
    for r in report.get("refused", []):
        position = r.get("line", 0)
        source = lines[position - 1] if 1 <= position <= len(lines) else None
        refused.append(
            Refusal(
                source.number if source else position,
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
    else:
        say(f"error: nothing was accepted from {path} ({read} lines read).")
    if refused:
        print(f"{len(refused)} lines refused:")
        rows = [[r.line, shorten(r.input), r.reason, r.message] for r in refused]
        print(table(["line", "input", "reason", "message"], rows))
    return 0 if accepted else 1


# ---------------------------------------------------------------- batches


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
    data = client(args).call("GET", f"/v1/batches/{args.id}")
    print_json(data) if args.json else print(_batch_fields(data))
    return 0


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
    if args.json:
        print_json(data)
    else:
        print(
            f"Batch {data['id']} accepted: {data['size']} entries are active "
            "(blocked from the next publication)."
        )
    return 0


def cmd_batch_reject(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/batches/{args.id}/reject", {"reason": args.reason})
    if args.json:
        print_json(data)
    else:
        print(f"Batch {data['id']} rejected: its {data['size']} entries will not be listed.")
    return 0


# ---------------------------------------------------------------- publication and oversight


def cmd_publish(args: argparse.Namespace) -> int:
    data = client(args).call("POST", "/v1/publish")
    if args.json:
        print_json(data)
    elif data.get("changed"):
        bulk = " (marked as a deliberate bulk change)" if data.get("bulk_change") else ""
        print(
            f"Published serial {data['serial']}: {data.get('added', 0)} added, "
            f"{data.get('removed', 0)} removed, {data.get('entries')} entries on the list{bulk}."
        )
    else:
        print(f"Nothing to publish; serial {data['serial']} ({data.get('entries')} entries).")
    return 0


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
            iso(i.get("last_seen")),
        ]
        for i in instances
    ]
    headers = ["asp", "instance", "serial", "lag", "divergent", "overdue", "last seen"]
    print(table(headers, rows))
    return 0


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


def cmd_complaints_list(args: argparse.Namespace) -> int:
    data = client(args).call(
        "GET", "/v1/complaints", query={"status": args.status, "limit": args.limit}
    )
    if args.json:
        print_json(data)
        return 0
    items = data.get("complaints") or []
    if not items:
        print("No complaints.")
        return 0
    rows = [
        [
            c["complaint_id"],
            c.get("status"),
            c.get("entry_id"),
            c.get("host"),
            c.get("role"),
            c.get("asp"),
            iso(c.get("created")),
            shorten(c.get("reason") or "", 40),
        ]
        for c in items
    ]
    print(table(["id", "status", "entry", "host", "role", "asp", "received", "reason"], rows))
    return 0


def _complaint_fields(c: dict) -> str:
    return fields(
        [
            ("complaint", c.get("complaint_id")),
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
    data = client(args).call("GET", f"/v1/complaints/{args.id}")
    print_json(data) if args.json else print(_complaint_fields(data))
    return 0


def cmd_complaints_decide(args: argparse.Namespace) -> int:
    body = {"decision": args.decision, "reasons": args.reasons}
    data = client(args).call("POST", f"/v1/complaints/{args.id}/decide", body)
    if args.json:
        print_json(data)
    else:
        print(f"Complaint {data['complaint_id']} {data['status']}.")
        if data["status"] == "upheld" and data.get("entry_id") is not None:
            print(f"Entry {data['entry_id']} is delisted; the next publication lifts the block.")
    return 0


def cmd_takedown(args: argparse.Namespace) -> int:
    body = {"recipient": args.recipient, "sent": args.sent}
    data = client(args).call("POST", f"/v1/entries/{args.id}/takedown", body)
    if args.json:
        print_json(data)
    else:
        print(
            f"Takedown notice for entry {args.id} to {data['recipient']}; "
            f"deadline {iso(data['deadline'])}."
        )
    return 0


def cmd_escalate(args: argparse.Namespace) -> int:
    return _entry_call(
        args,
        f"/v1/entries/{args.id}/escalate",
        {"reason": args.reason},
        lambda e: f"Entry {e['id']} is pending: another approver must approve it for blocking.",
    )


def cmd_partner_notice(args: argparse.Namespace) -> int:
    body = {"partner": args.partner, "reference": args.reference or ""}
    data = client(args).call("POST", f"/v1/entries/{args.id}/partner-notice", body)
    print_json(data) if args.json else print(f"Recorded notice to {args.partner}.")
    return 0


def cmd_confirm_removal(args: argparse.Namespace) -> int:
    return _entry_call(
        args,
        f"/v1/entries/{args.id}/confirm-removal",
        None,
        lambda e: f"Entry {e['id']} is delisted (removed at source).",
    )


def cmd_reverify(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/v1/entries/{args.id}/reverify", {"note": args.note or ""})
    if args.json:
        print_json(data)
    else:
        print(f"Entry {args.id} re-verified; next review {iso(data['review_date'])}.")
    return 0


def cmd_checks(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/v1/entries/{args.id}/checks", query={"limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    rows = [
        [iso(c["time"]), c["outcome"], c["detail"], c.get("redirect") or ""] for c in data["checks"]
    ]
    print(table(["time", "outcome", "detail", "redirect"], rows) if rows else "No checks yet.")
    return 0


def cmd_lifecycle_run(args: argparse.Namespace) -> int:
    data = client(args).call("POST", "/v1/lifecycle/run")
    if args.json:
        print_json(data)
    else:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(data["outcomes"].items())) or "none"
        moves = ", ".join(f"{k} {v}" for k, v in sorted(data["transitions"].items())) or "none"
        print(f"Checked {data['checked']} entries ({outcomes}); transitions: {moves}.")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/v1/review")
    if args.json:
        print_json(data)
        return 0
    rows = [
        [e["id"], iso(e["review_date"]), iso(e["lapses"]), e.get("last_outcome") or "-"]
        for e in data["entries"]
    ]
    if not rows:
        print("No entry is past its review date.")
    else:
        print(table(["entry", "review date", "lapses", "last check"], rows))
    return 0


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
    return 0


# ---------------------------------------------------------------- argument parsing


def _add_globals(parser: argparse.ArgumentParser, top: bool) -> None:
    """The global options, accepted before or after the subcommand.

    On subcommand parsers their default is SUPPRESS, so an option given before the subcommand
    is not overwritten by the subparser's default.
    """
    group = parser.add_argument_group("global options")

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group.add_argument(
        "--url",
        default=default(None),
        help=f"authority API address (env CORDON_URL; default {DEFAULT_URL})",
    )
    group.add_argument(
        "--token", default=default(None), help="officer bearer token (env CORDON_TOKEN)"
    )
    group.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help="read the token from FILE (env CORDON_TOKEN_FILE)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of tables and sentences",
    )


class _Commands:
    """Builds subcommand parsers that share the global options and a one-line description."""

    def __init__(self, parent: argparse.ArgumentParser, title: str) -> None:
        self.sub = parent.add_subparsers(title=title, metavar="COMMAND", required=True)

    def add(self, name: str, text: str, func: Callable | None = None) -> argparse.ArgumentParser:
        p = self.sub.add_parser(name, help=text, description=text)
        _add_globals(p, top=False)
        if func is not None:
            p.set_defaults(func=func)
        return p


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _entry_id(text: str) -> int:
    return _positive(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocklist",
        description="Cordon authority: keep, approve and publish the signed national blocklist.",
        epilog="Exit status: 0 done, 1 refused or failed, 2 bad usage or configuration.",
    )
    _add_globals(parser, top=True)
    cmds = _Commands(parser, "commands")

    p = cmds.add("init", "Create the state directory, database, keys and first admin.", cmd_init)
    p.add_argument("--config", required=True, help="authority.toml")
    p.add_argument("--admin", required=True, metavar="NAME", help="name of the first admin")
    p.add_argument("--token-out", metavar="FILE", help="write the admin token to FILE (mode 0600)")

    p = cmds.add("serve", "Run the authority API.", cmd_serve)
    p.add_argument("--config", required=True, help="authority.toml")
    p.add_argument("--host", help="listen address (default: [api] host)")
    p.add_argument("--port", type=_positive, help="listen port (default: [api] port)")

    officer = _Commands(cmds.add("officer", "Create and list officers."), "officer commands")
    p = officer.add("add", "Create an officer and print its token (shown once).", cmd_officer_add)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    officer.add("list", "List officers.", cmd_officer_list)

    asp = _Commands(cmds.add("asp", "Create and list access providers (ASPs)."), "asp commands")
    p = asp.add("add", "Create an ASP and print its token (shown once).", cmd_asp_add)
    p.add_argument("name")
    p.add_argument("--plain", action="store_true", help="allow the plain edition (for an RPZ feed)")
    p.add_argument("--token-out", metavar="FILE", help="write the token to FILE (mode 0600)")
    asp.add("list", "List ASPs.", cmd_asp_list)

    p = cmds.add("add", "Add an entry (pending until another approver approves it).", cmd_add)
    p.add_argument("value", help="domain or URL")
    p.add_argument("--country", required=True, metavar="CC", help="hosting country (ISO code)")
    p.add_argument("--evidence", required=True, metavar="REF", help="evidence reference")
    p.add_argument("--kind", choices=("domain", "url"), help="default: guessed from the value")
    p.add_argument("--category", help="default: csam")
    p.add_argument("--notes", help="free text, kept at the authority")

    p = cmds.add("import", "Import many entries from a CSV or text file as one batch.", cmd_import)
    p.add_argument("file", help=f"CSV with header {','.join(CSV_COLUMNS)}, or one value a line")
    p.add_argument("--format", choices=("csv", "text"), help="default: csv for *.csv, else text")
    p.add_argument("--country", metavar="CC", help="hosting country for lines without one")
    p.add_argument("--evidence", metavar="REF", help="evidence reference for lines without one")
    p.add_argument("--source", metavar="LABEL", help="label of the batch (default: file name)")

    p = cmds.add("approve", "Approve another officer's pending entry.", cmd_approve)
    p.add_argument("id", type=_entry_id)
    p = cmds.add("reject", "Reject a pending entry, with a reason.", cmd_reject)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--reason", required=True)
    p = cmds.add("delist", "Take an entry off the list, with a reason.", cmd_delist)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--reason", required=True)
    p = cmds.add("show", "Show one entry.", cmd_show)
    p.add_argument("id", type=_entry_id)

    p = cmds.add("list", "List or search entries.", cmd_list)
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--search", metavar="Q", help="text in the value or evidence reference")
    p.add_argument("--limit", type=_positive, default=100)
    p.add_argument("--offset", type=int, default=0)

    batch = _Commands(cmds.add("batch", "Show, accept or reject an imported batch."), "batch")
    p = batch.add("show", "Show a batch.", cmd_batch_show)
    p.add_argument("id", type=_entry_id)
    p = batch.add("accept", "Accept a batch imported by another officer.", cmd_batch_accept)
    p.add_argument("id", type=_entry_id)
    p.add_argument(
        "--confirm-large",
        action="store_true",
        help="confirm a batch larger than the configured share of the list",
    )
    p = batch.add("reject", "Reject a batch, with a reason.", cmd_batch_reject)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--reason", required=True)

    cmds.add("publish", "Publish the approved changes as the next serial.", cmd_publish)
    cmds.add("status", "Show the serial, entry counts and signing key expiry.", cmd_status)
    cmds.add("compliance", "Show which serial each ASP instance has applied.", cmd_compliance)

    p = cmds.add("takedown", "Record the takedown notice of an entry hosted at home.", cmd_takedown)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--recipient", required=True, help="who was notified (hosting provider)")
    p.add_argument("--sent", type=int, metavar="UNIX", help="when it was sent (default: now)")
    p = cmds.add("escalate", "Send a home-hosted entry still online to approval.", cmd_escalate)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--reason", required=True)
    p = cmds.add("partner-notice", "Record a notice to a partner hotline.", cmd_partner_notice)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--partner", required=True)
    p.add_argument("--reference")
    p = cmds.add("confirm-removal", "Confirm removal at source (delists).", cmd_confirm_removal)
    p.add_argument("id", type=_entry_id)
    p = cmds.add("reverify", "Record a re-verification: a new review date.", cmd_reverify)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--note")
    p = cmds.add("checks", "Show an entry's liveness check history.", cmd_checks)
    p.add_argument("id", type=_entry_id)
    p.add_argument("--limit", type=_positive, default=20)
    lifecycle = _Commands(cmds.add("lifecycle", "Run the lifecycle on demand."), "lifecycle")
    lifecycle.add(
        "run", "Run due liveness checks and lapse overdue entries now.", cmd_lifecycle_run
    )
    cmds.add("review", "List entries past their review date.", cmd_review)
    cmds.add("report", "Counts, time to removal and complaints (no list values).", cmd_report)

    keys = _Commands(cmds.add("keys", "Manage the authority's signing keys."), "keys commands")
    p = keys.add("renew", "Certify a fresh online signing key with the root key.", cmd_keys_renew)
    p.add_argument("--config", required=True, help="authority.toml")
    p.add_argument("--root-key", metavar="FILE", help="root private key (default: keys/root.key)")
    p.add_argument("--days", type=_positive, help="validity (default: signing_key_days)")

    complaints = _Commands(
        cmds.add("complaints", "Read and decide complaints from stop pages."), "complaints"
    )
    p = complaints.add("list", "List complaints, newest first.", cmd_complaints_list)
    p.add_argument("--status", choices=("received", "upheld", "rejected"))
    p.add_argument("--limit", type=_positive, default=100)
    p = complaints.add("show", "Show one complaint.", cmd_complaints_show)
    p.add_argument("id", help="complaint id (C-…)")
    p = complaints.add(
        "decide",
        "Decide a complaint with written reasons (never on your own entries).",
        cmd_complaints_decide,
    )
    p.add_argument("id", help="complaint id (C-…)")
    p.add_argument("decision", choices=("upheld", "rejected"))
    p.add_argument("--reasons", required=True, help="shown to the person who complained")

    audit = _Commands(cmds.add("audit", "Read and verify the audit log."), "audit commands")
    p = audit.add("log", "Show audit records, newest first.", cmd_audit_log)
    p.add_argument("--entry", type=_entry_id, metavar="ID", help="only records of this entry")
    p.add_argument("--limit", type=_positive, default=50)
    p = audit.add(
        "verify",
        "Verify the audit hash chain (offline with --config, else through the API).",
        cmd_audit_verify,
    )
    p.add_argument("--config", help="authority.toml: read the database directly")
    return parser


def _resolve_globals(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("CORDON_URL") or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CliError(f"--url {url!r} must start with http:// or https://", 2)
    args.url = url
    token = args.token
    token_file = args.token_file
    if not token and not token_file:
        token = os.environ.get("CORDON_TOKEN") or None
        token_file = None if token else os.environ.get("CORDON_TOKEN_FILE") or None
    if not token and token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the token file {token_file}: {exc}", 2) from None
        if not token:
            raise CliError(f"the token file {token_file} is empty", 2)
    args.token = token.strip() if token else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _resolve_globals(args)
        return args.func(args)
    except ApiError as exc:
        if args.json:
            print_json(exc.data)
        say(f"error: {exc}")
        for hint in exc.hints:
            say(hint)
        return exc.code
    except CliError as exc:
        say(f"error: {exc}")
        for hint in exc.hints:
            say(hint)
        return exc.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:
        # `blocklist list | head`: the reader went away; nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
