"""Reading import files (CSV or one value a line) into entries, refusing bad lines by number."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blocklist.cli.errors import CliError
from blocklist.cli.rendering import shorten

CSV_COLUMNS = ("value", "kind", "hosting_country", "evidence", "category", "notes")


MAX_VALUE = 8192


MAX_EVIDENCE = 2000


MAX_CATEGORY = 100


MAX_NOTES = 2000


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


def progress(path: Path, args: argparse.Namespace):
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


def decoded(raw_lines: Iterator[bytes], bar, bad: set[int]) -> Iterator[str]:
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


def checked_line(
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
    for n, text in enumerate(decoded(raw_lines, bar, bad), start=1):
        value = text.strip()
        if not value or value.startswith("#"):
            continue
        if n in bad:
            yield Refusal(n, shorten(value, 200), "not_utf8", "the line is not valid UTF-8")
            continue
        yield checked_line(n, value, value, country=country, evidence=evidence)


def read_csv(
    raw_lines: Iterator[bytes], bar, country: str, evidence: str, name: str
) -> Iterator[Line | Refusal]:
    bad: set[int] = set()
    reader = csv.reader(decoded(raw_lines, bar, bad))
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
        yield checked_line(
            first,
            shown,
            values.get("value", ""),
            kind=values.get("kind", ""),
            country=values.get("hosting_country", "").strip() or country,
            evidence=values.get("evidence", "").strip() or evidence,
            category=values.get("category", ""),
            notes=values.get("notes", ""),
        )
