"""Output for people: times, aligned tables and fields, messages on stderr.

Text that came from outside (a complaint's host, reason or contact, an import file, an API
error) may carry terminal escape sequences or bidirectional overrides that would rewrite what an
officer sees. Everything printed goes through `safe`, which shows such characters as `\\uXXXX`
escapes (also valid inside JSON strings, so `--json` output stays parseable).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

# C0 controls but tab and newline, DEL, C1 controls, and the bidi marks, embeddings, overrides
# and isolates (Unicode TR9), plus the line and paragraph separators.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def safe(text: str) -> str:
    """`text` with control and bidi characters shown as visible `\\uXXXX` escapes."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeWriter(io.TextIOBase):
    """A text stream that passes everything written through `safe`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(safe(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


TIME_FIELDS = frozenset({"created", "approved", "review_date", "delisted", "decided", "time"})


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
    text = str(value)
    return safe(" ".join(text.split()) if "\n" in text else text)


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
    print(safe(json.dumps(data, indent=2, ensure_ascii=False)))


def reply(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> int:
    """`data` as JSON with --json, else `text(data)` (may hold several lines); exit code 0."""
    if args.json:
        print_json(data)
    else:
        print(text(data))
    return 0


def reply_rows(
    args: argparse.Namespace,
    data: Any,
    headers: Sequence[str],
    rows: Callable[[Any], list[list[Any]]],
    empty: str,
) -> int:
    """`data` as JSON with --json, else a table of `rows(data)`, or `empty` when there are none."""

    def text(data: Any) -> str:
        found = rows(data)
        return table(headers, found) if found else empty

    return reply(args, data, text)


def say(message: str) -> None:
    print(safe(message), file=sys.stderr)
