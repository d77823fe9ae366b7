"""Feed file formats, pure functions over bytes: plain domain lines and CSV.

Plain text: one domain or URL per line; blank lines and `#` comments are skipped. The item's
own id is the line's value. CSV: a header naming `value` (or `domain`, `url`) and optionally
`id` (the feed's own id) and `kind`; or `sha256` instead of a value for a hashed-only feed,
whose entries travel as digests.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Iterator

from blocklist.authority.feeds import FeedItem
from blocklist.entries import parse_kind
from blocklist.errors import InvalidEntry

MAX_FEED_BYTES = 256 * 1024 * 1024
MAX_LINE = 8192
VALUE_COLUMNS = ("value", "domain", "url")


class FeedFormatError(ValueError):
    """The file as a whole cannot be used (size, checksum, header, encoding)."""


def check_size(data: bytes, limit: int = MAX_FEED_BYTES) -> None:
    if len(data) > limit:
        raise FeedFormatError(f"the feed is {len(data)} bytes, more than the {limit} allowed")


def check_sha256(data: bytes, expected: str) -> None:
    text = expected.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise FeedFormatError(f"checksum {expected[:80]!r} is not a SHA-256 in hex")
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, text):
        raise FeedFormatError(f"checksum mismatch: the file's SHA-256 is {actual}, not {text}")


def parse(data: bytes, fmt: str, refused: list[dict]) -> Iterator[FeedItem]:
    """The items of a feed file; lines that cannot be read go to `refused`."""
    if fmt == "csv":
        return parse_csv(data, refused)
    if fmt == "text":
        return parse_text(data, refused)
    raise FeedFormatError(f"unknown feed format {fmt!r}")


def _refuse(refused: list[dict], line: int, raw: str, reason: str, message: str) -> None:
    refused.append({"line": line, "input": raw[:200], "reason": reason, "message": message})


def parse_text(data: bytes, refused: list[dict]) -> Iterator[FeedItem]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if len(raw) > MAX_LINE:
            _refuse(refused, n, "", "too_long", f"line is longer than {MAX_LINE} bytes")
            continue
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            _refuse(refused, n, raw.decode("utf-8", "replace"), "encoding", "not UTF-8")
            continue
        if not text or text.startswith("#"):
            continue
        yield FeedItem(n, text, raw=text)


def parse_csv(data: bytes, refused: list[dict]) -> Iterator[FeedItem]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedFormatError(f"the CSV file is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise FeedFormatError(f"not a readable CSV file: {exc}") from None
    col = next((header.index(c) for c in VALUE_COLUMNS if c in header), None)
    digest_col = header.index("sha256") if "sha256" in header else None
    if col is None and digest_col is None:
        raise FeedFormatError(
            f"the CSV header {header[:10]} names no value column ({', '.join(VALUE_COLUMNS)})"
            " nor sha256"
        )
    id_col = header.index("id") if "id" in header else None
    kind_col = header.index("kind") if "kind" in header else None
    try:
        for row in reader:
            n = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                _refuse(
                    refused,
                    n,
                    ",".join(row),
                    "columns",
                    f"{len(row)} columns, the header has {len(header)}",
                )
                continue
            ref = row[id_col].strip()[:200] if id_col is not None else ""
            try:
                kind = parse_kind(row[kind_col]) if kind_col is not None and row[kind_col] else None
            except InvalidEntry as exc:
                _refuse(refused, n, ",".join(row), exc.reason, str(exc))
                continue
            if col is not None and row[col].strip():
                value = row[col].strip()
                yield FeedItem(n, ref or value, raw=value, kind=kind)
                continue
            hexd = row[digest_col].strip().lower() if digest_col is not None else ""
            try:
                digest = bytes.fromhex(hexd)
                if len(digest) != 32:
                    raise ValueError
            except ValueError:
                _refuse(refused, n, ",".join(row), "invalid_digest", "no value and no SHA-256")
                continue
            yield FeedItem(n, ref or hexd, digest=digest, kind=kind)
    except csv.Error as exc:
        raise FeedFormatError(f"not a readable CSV file (line {reader.line_num}): {exc}") from None
