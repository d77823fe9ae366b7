"""Output for people: times, aligned tables and fields, messages on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

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
