"""What each request gets, as pure functions of its inputs: no server, no I/O, no clock.

`notice` maps (canonical host, raw path, language, matcher) to a `View`: the status, the page
kind (a pre-rendered template, see stoppage.pages) and the per-request values to insert. The
aiohttp handlers in stoppage.app only parse requests, call these, and render the result; tests
call them directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from blocklist.state import Kind
from stoppage.i18n import negotiate
from stoppage.matching import Matcher
from stoppage.outbox import FORWARDED, PENDING, UNDELIVERABLE

ROLES = ("site_owner", "hosting_provider", "visitor", "other")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_PATH = 8192


@dataclass(slots=True)  # not frozen: cheaper to build, one per request
class View:
    status: int
    kind: str  # page kind: "blocked", "blocked_url", "neutral", "form", "not_blocked"
    lang: str
    values: dict[str, str] = field(default_factory=dict)  # inserted escaped
    entry_id: int | None = None  # the list entry shown, for the hourly counters


def clean_text(value: object) -> str:
    """Form text as the authority will store it: LF newlines, no control characters, trimmed."""
    if not isinstance(value, str):
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return text.encode("utf-8", "replace").decode("utf-8").strip()


def strip_lang_param(raw_path: str) -> str:
    """The request path without the `lang=` parameter the language links append to it."""
    base, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    params = query.split("&")
    if params[-1].startswith("lang="):
        params.pop()
    query = "&".join(params)
    return f"{base}?{query}" if query else base


def same_site_path(raw_path: str) -> str:
    """A path that stays on this site when used as a link ("//x" or "/\\x" would leave it)."""
    return "/" + raw_path.lstrip("/\\").replace("\\", "%5C")


def choose_language(
    query_lang: str | None, accept_language: str, languages: list[str], default: str
) -> str:
    """`?lang=` when it names an offered language, else Accept-Language negotiation."""
    if query_lang is not None and query_lang in languages:
        return query_lang
    return negotiate(accept_language[:1000], languages, default)


def notice(host: str | None, raw_path: str, lang: str, matcher: Matcher) -> View:
    """The page for any GET on any host: the 451 notice for a listed address, else neutral."""
    raw = strip_lang_param(raw_path)
    match = matcher.lookup(host, raw)
    if match is None or host is None:
        return View(200, "neutral", lang)
    values = {"host": host, "entry": str(match.entry_id)}
    if match.kind is not Kind.URL:
        return View(451, "blocked", lang, values, match.entry_id)
    path = same_site_path(raw)
    values["switch_base"] = path + ("&" if "?" in path else "?")
    values["complaint_href"] = f"/complaint?path={quote(path, safe='')}&lang={lang}"
    return View(451, "blocked_url", lang, values, match.entry_id)


def complaint_form(host: str | None, path: str, lang: str, matcher: Matcher) -> View:
    """The empty complaint form for a listed address (the token is added by the caller)."""
    path = path[:MAX_PATH]
    match = matcher.lookup(host, path)
    if host is None or match is None:
        return View(404, "not_blocked", lang)
    switch_base = "?" if path == "/" else f"?path={quote(same_site_path(path), safe='')}&"
    return View(200, "form", lang, {"host": host, "switch_base": switch_base}, match.entry_id)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a complaint: the message key, its values, the field to mark."""

    key: str
    field: str
    values: tuple[tuple[str, int], ...] = ()


def check_complaint(
    values: dict[str, str], languages: list[str], max_reason: int, max_contact: int
) -> list[Problem]:
    """What is wrong with a complaint's fields (lengths counted in characters, any script)."""
    problems = []
    if values["role"] not in ROLES:
        problems.append(Problem("err_role", "role"))
    reason = values["reason"]
    if not reason:
        problems.append(Problem("err_reason_empty", "reason"))
    elif len(reason) > max_reason:
        problems.append(
            Problem("err_reason_long", "reason", (("count", len(reason)), ("max", max_reason)))
        )
    contact = values["contact"]
    if len(contact) > max_contact:
        problems.append(
            Problem("err_contact_long", "contact", (("count", len(contact)), ("max", max_contact)))
        )
    if values["language"] not in languages:
        problems.append(Problem("err_language", "language"))
    return problems


def status_of(item: dict) -> tuple[str, str]:
    """(status code shown, message key) for an outbox row."""
    if item["state"] == PENDING:
        return "received", "status_received"
    if item["state"] == UNDELIVERABLE:
        return "undeliverable", "status_undeliverable"
    if item["state"] == FORWARDED and item["status"] in ("upheld", "rejected"):
        return item["status"], f"status_{item['status']}"
    return "forwarded", "status_forwarded"
