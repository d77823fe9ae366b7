"""stoppage.toml: what an ASP configures for its stop page, validated at start-up.

Every key is documented in docs/stoppage.md; unknown sections and keys are refused, and errors
name the file and the key (`blocklist.config.load_config`). Texts a person reads (the authority's
name, the legal basis, link names…) are either one string or a table of translations keyed by
language code: `legal_basis = { fr = "…", en = "…" }`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from blocklist.config import AddressList, LoopbackAddress, Section
from blocklist.sync.config import SyncSection

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
# Links a person may follow from the page: web pages, phone numbers, e-mail addresses. Anything
# else (javascript:, data:) is refused, even from the operator's own configuration.
LINK_URL = r"^(https?://[^\s\"'<>]+|tel:\+?[0-9 ()./-]{3,32}|mailto:[^\s\"'<>]+)$"

Localized = str | dict[str, str]
# A missing translation is shown in English first (most widely read), then the default language.
FALLBACK_LANGUAGE = "en"
# Reserved for the page renderer's markers (stoppage.pages).
_RESERVED = ("\ue000", "\ue001")


def _check_localized(value: Localized) -> Localized:
    texts = [value] if isinstance(value, str) else list(value.values())
    if isinstance(value, dict):
        for code in value:
            if not LANGUAGE_CODE.match(code):
                raise ValueError(f"{code!r} is not a language code like 'fr' or 'pt-br'")
    for text in texts:
        if any(c in text for c in _RESERVED):
            raise ValueError("contains a reserved private-use character (U+E000 or U+E001)")
    return value


def localize_lang(value: Localized, lang: str, default: str = "") -> tuple[str, str]:
    """The text of `value` for `lang` and the language it is in ("" when not stated).

    Order: `lang`, its primary subtag, English, the default language, then the first given.
    """
    if isinstance(value, str):
        return value, ""
    for code in (lang, lang.split("-")[0], FALLBACK_LANGUAGE, default):
        if code in value:
            return value[code], code
    return next(iter(value.items()), ("", ""))[::-1]


def localize(value: Localized, lang: str, default: str = "") -> str:
    """The text of `value` for `lang` (see `localize_lang`)."""
    return localize_lang(value, lang, default)[0]


class Link(Section):
    name: Localized
    url: Annotated[str, Field(pattern=LINK_URL, max_length=500)]
    # Shown next to the link, e.g. a free phone number or opening hours.
    note: Localized = ""

    _names = field_validator("name", "note")(_check_localized)


class AuthoritySection(Section):
    # Who orders the block. Empty: the authority named in the signed list.
    name: Localized = ""
    # Its public web site; also the default `Link: <…>; rel="blocked-by"` of 451 answers.
    website: Annotated[str, Field(pattern=r"^https?://[^\s\"'<>]+$")]
    contact: Localized = ""
    # The law under which addresses are blocked (shown under "Legal basis").
    legal_basis: Localized
    # How complaints are decided: who, how fast, what happens when one is upheld.
    complaint_policy: Localized = ""

    _texts = field_validator("name", "contact", "legal_basis", "complaint_policy")(_check_localized)


class OperatorSection(Section):
    # The access provider that shows the notice.
    name: Localized = "your access provider"
    contact: Localized = ""

    _texts = field_validator("name", "contact")(_check_localized)


class PageSection(Section):
    # Languages offered, in the order of the switcher; each needs a catalogue (shipped ones: fr,
    # en, ar, sw, pt; more in `locales_dir`).
    languages: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["fr", "en", "ar", "sw", "pt"]
    )
    # Used when Accept-Language matches none; empty = the first of `languages`.
    default_language: str = ""
    # Extra catalogues (<code>.json): new languages, or keys overriding the shipped texts.
    locales_dir: Path | None = None
    # Templates overriding the shipped ones, file by file (same names).
    templates_dir: Path | None = None
    hotline: Link
    # Confidential help for people worried about their own thoughts or behaviour.
    confidential_help: Annotated[list[Link], Field(min_length=1)]
    # Help for victims and for people worried about a child.
    victim_help: list[Link] = Field(default_factory=list)
    # Show "Reference: entry N" (the opaque entry id, useful in complaints).
    show_entry_id: bool = True
    # The `Link: <…>; rel="blocked-by"` URL of 451 answers; empty = authority.website.
    blocked_by_url: Annotated[str, Field(pattern=r"^(https?://[^\s\"'<>]+)?$")] = ""
    # A stable address of the complaint status page on this service, shown with each ticket: it
    # must keep working after the blocked host is unblocked (and no longer resolves here), so it
    # names the stop page itself, e.g. "http://stoppage.isp.example/complaint/status". Empty:
    # http://<first server.listen address>/complaint/status.
    status_url: Annotated[str, Field(pattern=r"^(https?://[^\s\"'<>?#]+)?$")] = ""

    @field_validator("languages")
    @classmethod
    def _codes(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if not LANGUAGE_CODE.match(code):
                raise ValueError(f"{code!r} is not a language code like 'fr' or 'pt-br'")
        if len(set(codes)) != len(codes):
            raise ValueError("a language is listed twice")
        return codes

    @model_validator(mode="after")
    def _default(self) -> PageSection:
        if self.default_language and self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} is not one of languages")
        return self

    @property
    def fallback_language(self) -> str:
        return self.default_language or self.languages[0]


class ServerSection(Section):
    # The stop page addresses: the resolver's [blocking] ipv4/ipv6 must be among them.
    listen: Annotated[AddressList, Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1"]
    )
    port: Annotated[int, Field(ge=0, le=65535)] = 80
    # How often to look for a new state.bin written by `resolver sync`.
    list_poll_interval: Annotated[float, Field(gt=0, le=300)] = 1.0
    # Request bodies above this are refused with 413 before they are read. It is raised, if
    # needed, to what a complaint within the limits can take (`stoppage check` says so): any
    # text the form's fields let a browser send (maxlength counts UTF-16 units and is set to
    # twice the limit in characters; a unit takes at most 3 UTF-8 bytes, 9 once URL-encoded),
    # plus room for the other fields, so a complaint within the limits is never refused for size.
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    # Addresses of reverse proxies in front of the stop page: for requests from them, the
    # complaint rate limits key on the last X-Forwarded-For address (in memory only, never
    # logged). Empty: the connection's address.
    trusted_proxies: AddressList = Field(default_factory=list)


class ComplaintsSection(Section):
    enabled: bool = True
    # Outbox database, form-token secret and persisted counters live here.
    state_dir: Path = Path("stoppage-state")
    # HMAC secret for form tokens (32 random bytes, mode 0600, created on first start).
    # Empty = <state_dir>/form-secret.
    secret_file: Path | None = None
    token_max_age_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 2 * 3600
    # A form sent sooner than this after it was shown is refused (robots are fast).
    min_fill_seconds: Annotated[float, Field(ge=0, le=600)] = 3.0
    max_reason_chars: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_contact_chars: Annotated[int, Field(ge=0, le=200)] = 200
    # Forwarding to the authority ([sync] authority_url and token): exponential backoff with
    # jitter between these bounds, kept in the outbox across restarts.
    retry_initial_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retry_max_seconds: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    request_timeout: Annotated[float, Field(gt=0, le=300)] = 30.0
    # How often to ask the authority for decisions while complaints await one.
    decision_poll_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    # Tickets are deleted this long after their decision (the status page then forgets them).
    keep_decided_days: Annotated[int, Field(ge=1, le=3650)] = 365

    @model_validator(mode="after")
    def _order(self) -> ComplaintsSection:
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds is above retry_max_seconds")
        return self

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "form-secret"

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"


class LimitsSection(Section):
    # Complaints accepted per hour: from one client address (counted in memory only, never
    # stored or logged), about one list entry, and in all.
    per_client_per_hour: Annotated[int, Field(ge=1)] = 5
    per_entry_per_hour: Annotated[int, Field(ge=1)] = 30
    total_per_hour: Annotated[int, Field(ge=1)] = 300
    # Status look-ups per client address per minute.
    status_per_client_per_minute: Annotated[int, Field(ge=1)] = 20
    # Client addresses remembered per window; beyond, new ones share one counter.
    max_tracked_clients: Annotated[int, Field(ge=100)] = 100_000


class MetricsSection(Section):
    enabled: bool = True
    # Local only: Prometheus scrapes it through the host, never clients.
    listen: LoopbackAddress = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9154
    # Distinct entry ids labelled in cordon_stoppage_blocked_total; others count as "other".
    # Bounded so that a scrape stays small; per-entry detail is on /counters.
    max_entry_labels: Annotated[int, Field(ge=0, le=5_000)] = 500
    # Hourly counts per entry id are kept this long in memory (and served on /counters).
    keep_hours: Annotated[int, Field(ge=1, le=24 * 366)] = 48
    # Distinct entry ids counted per hour; past it, notices count in the hour's "other" bucket.
    # Memory is bounded by keep_hours x max_entries_per_hour (about 100 bytes an id).
    max_entries_per_hour: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Also write them (counts only) to <complaints.state_dir>/counters.json every minute.
    persist_counters: bool = False


class StoppageConfig(Section):
    """Every section `stoppage` reads; unknown sections and keys are refused."""

    # The same section as resolver.toml: where `resolver sync` keeps the verified list
    # (state_dir), the pinned root keys, and the authority URL and ASP token for complaints.
    sync: SyncSection
    authority: AuthoritySection
    operator: OperatorSection = OperatorSection()
    page: PageSection
    server: ServerSection = ServerSection()
    complaints: ComplaintsSection = ComplaintsSection()
    limits: LimitsSection = LimitsSection()
    metrics: MetricsSection = MetricsSection()

    @model_validator(mode="after")
    def _token_source(self) -> StoppageConfig:
        if self.sync.token and self.sync.token_file:
            raise ValueError("set sync.token or sync.token_file, not both")
        return self

    @property
    def form_bytes_needed(self) -> int:
        c = self.complaints
        return 18 * (c.max_reason_chars + c.max_contact_chars) + 4096

    @property
    def body_limit(self) -> int:
        # Never below what a complaint within the limits needs: it must not be lost to a 413.
        return max(self.server.max_body_bytes, self.form_bytes_needed)

    @property
    def status_url(self) -> str:
        if self.page.status_url:
            return self.page.status_url
        address = self.server.listen[0]
        host = f"[{address}]" if ":" in address else address
        port = "" if self.server.port in (80, 0) else f":{self.server.port}"
        return f"http://{host}{port}/complaint/status"

    def resolve_paths(self, base: Path) -> StoppageConfig:
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p).resolve()

        sync = self.sync.model_copy(
            update={"state_dir": fix(self.sync.state_dir), "token_file": fix(self.sync.token_file)}
        )
        page = self.page.model_copy(
            update={
                "locales_dir": fix(self.page.locales_dir),
                "templates_dir": fix(self.page.templates_dir),
            }
        )
        complaints = self.complaints.model_copy(
            update={
                "state_dir": fix(self.complaints.state_dir),
                "secret_file": fix(self.complaints.secret_file),
            }
        )
        return self.model_copy(update={"sync": sync, "page": page, "complaints": complaints})
