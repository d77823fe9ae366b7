"""The stop page's HTTP application: blocking notices, the complaint form and the status page.

Any Host is answered. A host (or host + path, for URL entries) on the verified list gets the
notice with status 451 (RFC 7725); any other gets a neutral page with status 200 that says this
server only shows blocking notices. Pages are rendered from Jinja2 templates with autoescaping,
in the language chosen by `?lang=` or Accept-Language, and carry a strict CSP (the only style is
inline and allowed by its hash; no script, no image, no third-party resource), no cookies, and
`Cache-Control: no-store`. Nothing about a visitor is logged or stored: the access log is off,
and the only record of a notice shown is an hourly counter per list entry id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from prometheus_client import CollectorRegistry

from blocklist.state import Kind
from blocklist.sync.verified import VerifiedList
from stoppage.config import StoppageConfig, localize
from stoppage.counters import HourlyCounters, StopPageMetrics
from stoppage.i18n import REFERENCE_LANGUAGE, Translator, load_catalogues, negotiate
from stoppage.limits import WindowLimit
from stoppage.matching import Match, Matcher, canonical_host
from stoppage.outbox import (
    FORWARDED,
    PENDING,
    UNDELIVERABLE,
    DuplicateForm,
    NewComplaint,
    Outbox,
    StorageError,
)
from stoppage.tokens import FormTokens, TokenError, TokenProblem

log = logging.getLogger("cordon.stoppage")

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
CSS_FILE = PACKAGE_DIR / "static" / "style.css"
ROLES = ("site_owner", "hosting_provider", "visitor", "other")
FORM_TYPE = "application/x-www-form-urlencoded"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PAGE_CACHE_LIMIT = 2048


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


def _bdi(text: str) -> Markup:
    # Host names, codes and dates read left to right inside right-to-left text.
    return Markup('<bdi dir="ltr">{}</bdi>').format(text)


def _isolated(text: str) -> Markup:
    # Names and contacts from the configuration keep their own direction inside any page.
    return Markup("<bdi>{}</bdi>").format(text) if text else Markup("")


def _date(ts: int | None) -> Markup:
    if ts is None:
        return Markup("")
    return _bdi(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)))


class StopPage:
    """Everything one stop page process serves; `make_app` wires it to aiohttp."""

    def __init__(
        self,
        config: StoppageConfig,
        *,
        outbox: Outbox | None = None,
        tokens: FormTokens | None = None,
        registry: CollectorRegistry | None = None,
        counters: HourlyCounters | None = None,
        on_stored: Callable[[], None] | None = None,
        source: str = "configuration",
    ) -> None:
        self.config = config
        page = config.page
        self.languages = list(page.languages)
        self.default_language = page.fallback_language
        catalogues = load_catalogues(self.languages, page.locales_dir, source)
        reference = load_catalogues([REFERENCE_LANGUAGE], page.locales_dir, source)
        fallbacks = [catalogues[self.default_language], reference[REFERENCE_LANGUAGE]]
        self.catalogues = catalogues
        self.translators = {c: Translator(cat, fallbacks) for c, cat in catalogues.items()}
        self.language_links = [{"code": c, "name": catalogues[c].name} for c in self.languages]

        loaders = [FileSystemLoader(str(TEMPLATES_DIR))]
        if page.templates_dir is not None:
            loaders.insert(0, FileSystemLoader(str(page.templates_dir)))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=StrictUndefined,
        )
        css = CSS_FILE.read_text(encoding="utf-8").strip()
        self.css = Markup(css)  # the operator's own file; its hash is the CSP's only source
        css_hash = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        self.csp = (
            f"default-src 'none'; style-src 'sha256-{css_hash}'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'"
        )
        self.blocked_by = page.blocked_by_url or config.authority.website

        self.outbox = outbox
        self.tokens = tokens
        self.complaints_enabled = config.complaints.enabled and outbox is not None
        self.on_stored = on_stored or (lambda: None)
        self.counters = counters or HourlyCounters(config.metrics.keep_hours)
        self.registry = registry or CollectorRegistry()
        self.metrics = StopPageMetrics(self.registry, config.metrics.max_entry_labels)
        limits = config.limits
        self.limit_client = WindowLimit(
            limits.per_client_per_hour, 3600, max_keys=limits.max_tracked_clients
        )
        self.limit_entry = WindowLimit(
            limits.per_entry_per_hour, 3600, max_keys=limits.max_tracked_clients
        )
        self.limit_total = WindowLimit(limits.total_per_hour, 3600)
        self.limit_status = WindowLimit(
            limits.status_per_client_per_minute, 60, max_keys=limits.max_tracked_clients
        )
        self.matcher = Matcher(None)
        self._pages: dict[tuple, bytes] = {}
        self._contexts: dict[str, dict[str, Any]] = {}
        self._negotiated: dict[str, str] = {}

    # ------------------------------------------------------------ list

    def set_list(self, verified: VerifiedList | None) -> None:
        """Swap in a new verified list (the watcher's callback)."""
        self.matcher = Matcher(verified)
        self._pages = {}
        self._contexts = {}
        self.metrics.list_loaded.set(verified is not None)
        if verified is not None:
            self.metrics.list_serial.set(verified.serial)
            self.metrics.list_entries.set(len(verified.state))
            log.info(
                "list in force",
                extra={"fields": {"serial": verified.serial, "entries": len(verified.state)}},
            )

    # ------------------------------------------------------------ rendering

    def language(self, request: web.Request) -> str:
        chosen = request.query.get("lang")
        if chosen is not None and chosen in self.translators:
            return chosen
        header = request.headers.get("Accept-Language", "")
        try:
            return self._negotiated[header]
        except KeyError:
            pass
        lang = negotiate(header[:1000], self.languages, self.default_language)
        if len(self._negotiated) > 1024:
            self._negotiated = {}
        self._negotiated[header] = lang
        return lang

    def _base_context(self, lang: str) -> dict[str, Any]:
        ctx = self._contexts.get(lang)
        if ctx is not None:
            return ctx
        cfg = self.config
        fb = (self.default_language, REFERENCE_LANGUAGE)

        def loc(value: Any) -> str:
            return localize(value, lang, fb)

        def link(item: Any) -> dict[str, str]:
            return {"url": item.url, "name": loc(item.name), "note": loc(item.note)}

        tr = self.translators[lang]
        website = cfg.authority.website
        ctx = {
            "t": tr,
            "lang": lang,
            "dir": tr.direction,
            "css": self.css,
            "languages": self.language_links,
            "switch_base": "?",
            "authority": _isolated(loc(cfg.authority.name) or self.matcher.authority or website),
            "authority_contact": _isolated(loc(cfg.authority.contact)),
            "authority_website": website,
            "authority_website_label": website.split("://", 1)[-1].rstrip("/"),
            "operator": _isolated(loc(cfg.operator.name)),
            "operator_contact": _isolated(loc(cfg.operator.contact)),
            "legal_basis": loc(cfg.authority.legal_basis),
            "complaint_policy": loc(cfg.authority.complaint_policy),
            "hotline": link(cfg.page.hotline),
            "confidential_help": [link(x) for x in cfg.page.confidential_help],
            "victim_help": [link(x) for x in cfg.page.victim_help],
            "complaints_enabled": self.complaints_enabled,
        }
        self._contexts[lang] = ctx
        return ctx

    def render(self, template: str, lang: str, **extra: Any) -> bytes:
        ctx = dict(self._base_context(lang))
        ctx.update(extra)
        return self.env.get_template(template).render(ctx).encode("utf-8")

    def respond(
        self, body: bytes, lang: str, status: int = 200, headers: dict | None = None
    ) -> web.Response:
        resp = web.Response(body=body, status=status, content_type="text/html", charset="utf-8")
        resp.headers["Content-Language"] = lang
        resp.headers["Vary"] = "Accept-Language"
        if headers:
            resp.headers.update(headers)
        return resp

    def message(
        self,
        lang: str,
        status: int,
        errors: list[Markup],
        *,
        next_href: str = "",
        next_label: str = "",
        headers: dict | None = None,
    ) -> web.Response:
        tr = self.translators[lang]
        body = self.render(
            "message.html",
            lang,
            title=tr("err_title"),
            errors=errors,
            next_href=next_href,
            next_label=next_label,
        )
        return self.respond(body, lang, status, headers)

    async def security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["Content-Security-Policy"] = self.csp
        h["Referrer-Policy"] = "no-referrer"
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Cache-Control"] = "no-store"
        h["Server"] = "stoppage"
        h.popall("Set-Cookie", None)

    # ------------------------------------------------------------ notices

    async def page(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/favicon.ico":
            return web.Response(status=404)
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /\n")
        lang = self.language(request)
        host = canonical_host(request.headers.get("Host", ""))
        raw = strip_lang_param(request.raw_path)
        match = self.matcher.lookup(host, raw)
        if match is None:
            self.metrics.neutral_pages.inc()
            key: tuple = ("neutral", lang)
            body = self._pages.get(key)
            if body is None:
                body = self._cache(key, self.render("neutral.html", lang))
            return self.respond(body, lang, 200)
        assert host is not None
        self.counters.hit(match.entry_id)
        self.metrics.blocked_hit(match.entry_id)
        self.metrics.blocked_pages.inc()
        is_url = match.kind is Kind.URL
        key = ("blocked", lang, host, match.entry_id, raw if is_url else "")
        body = self._pages.get(key)
        if body is None:
            body = self._cache(key, self._render_blocked(lang, host, match, raw))
        return self.respond(body, lang, 451, {"Link": f'<{self.blocked_by}>; rel="blocked-by"'})

    def _cache(self, key: tuple, body: bytes) -> bytes:
        if len(self._pages) >= _PAGE_CACHE_LIMIT:
            self._pages = {}
        self._pages[key] = body
        return body

    def _render_blocked(self, lang: str, host: str, match: Match, raw: str) -> bytes:
        is_url = match.kind is Kind.URL
        switch_base = "?"
        complaint_href = f"/complaint?lang={lang}"
        if is_url:
            path = same_site_path(raw)
            switch_base = path + ("&" if "?" in path else "?")
            complaint_href = f"/complaint?path={quote(path, safe='')}&lang={lang}"
        return self.render(
            "blocked.html",
            lang,
            host=_bdi(host),
            is_url=is_url,
            entry_id=match.entry_id if self.config.page.show_entry_id else None,
            serial=self.matcher.serial,
            switch_base=switch_base,
            complaint_href=complaint_href,
        )

    # ------------------------------------------------------------ complaint form

    def _form(
        self,
        lang: str,
        host: str,
        token: str,
        *,
        values: dict[str, str] | None = None,
        errors: list[Markup] | None = None,
        invalid: tuple[str, ...] = (),
        status: int = 200,
        switch_base: str = "?",
        headers: dict | None = None,
    ) -> web.Response:
        form = {"role": "", "reason": "", "contact": "", "language": lang}
        form.update(values or {})
        c = self.config.complaints
        body = self.render(
            "form.html",
            lang,
            host=_bdi(host),
            token=token,
            roles=ROLES,
            form=form,
            errors=errors or [],
            invalid=invalid,
            max_reason=c.max_reason_chars,
            max_contact=c.max_contact_chars,
            switch_base=switch_base,
        )
        return self.respond(body, lang, status, headers)

    def _complaints_off(self, lang: str) -> web.Response:
        tr = self.translators[lang]
        operator = self._base_context(lang)["operator"]
        return self.message(lang, 404, [tr("complaints_off", operator=operator)])

    def _not_blocked(self, lang: str) -> web.Response:
        self.metrics.complaints.labels("not_blocked").inc()
        return self.message(lang, 404, [self.translators[lang]("err_not_blocked")])

    async def complaint_form(self, request: web.Request) -> web.Response:
        lang = self.language(request)
        if not self.complaints_enabled or self.tokens is None:
            return self._complaints_off(lang)
        host = canonical_host(request.headers.get("Host", ""))
        path = request.query.get("path", "/")[:8192]
        match = self.matcher.lookup(host, path)
        if host is None or match is None:
            return self._not_blocked(lang)
        switch_base = "?"
        if path != "/":
            switch_base = f"?path={quote(same_site_path(path), safe='')}&"
        return self._form(
            lang, host, self.tokens.issue(host, match.entry_id), switch_base=switch_base
        )

    async def _read_form(self, request: web.Request, lang: str) -> Any:
        """The posted form fields, or a response that says what is wrong with the request."""
        tr = self.translators[lang]
        limit = self.config.server.max_body_bytes
        too_large = tr("err_too_large", kb=limit // 1024)
        if request.content_length is not None and request.content_length > limit:
            self.metrics.complaints.labels("too_large").inc()
            return self.message(lang, 413, [too_large])
        if request.content_type != FORM_TYPE:
            self.metrics.complaints.labels("media_type").inc()
            return self.message(lang, 415, [tr("err_media_type")])
        try:
            return await request.post()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.complaints.labels("too_large").inc()
            return self.message(lang, 413, [too_large])
        except (ValueError, UnicodeDecodeError):
            self.metrics.complaints.labels("bad_form").inc()
            return self.message(lang, 400, [tr("err_bad_form")])

    @staticmethod
    def _client(request: web.Request) -> str:
        # Used as an in-memory rate-limit key for the current window only.
        return request.remote or "-"

    async def submit(self, request: web.Request) -> web.Response:
        lang = self.language(request)
        tr = self.translators[lang]
        if not self.complaints_enabled or self.tokens is None or self.outbox is None:
            return self._complaints_off(lang)
        host = canonical_host(request.headers.get("Host", ""))
        form = await self._read_form(request, lang)
        if isinstance(form, web.Response):
            return form
        c = self.config.complaints
        values = {
            "role": clean_text(form.get("role", "")),
            "reason": clean_text(form.get("reason", "")),
            "contact": clean_text(form.get("contact", "")),
            "language": clean_text(form.get("language", "")) or lang,
        }
        token = clean_text(form.get("token", ""))
        open_again = {"next_href": f"/complaint?lang={lang}", "next_label": tr("open_form")}

        try:
            parsed = self.tokens.verify(token, host)
        except TokenError as exc:
            self.metrics.complaints.labels(exc.problem.value).inc()
            if exc.problem is TokenProblem.FORGED or exc.token is None or host is None:
                return self.message(lang, 400, [tr("err_token_forged")], **open_again)
            if exc.problem is TokenProblem.EXPIRED:
                fresh = self.tokens.issue(host, exc.token.entry_id)
                hours = max(1, round(c.token_max_age_seconds / 3600))
                err = tr("err_token_expired", hours=hours)
                return self._form(lang, host, fresh, values=values, errors=[err], status=400)
            return self._form(
                lang, host, token, values=values, errors=[tr("err_too_fast")], status=400
            )
        assert host is not None

        if clean_text(form.get("website", "")):
            self.metrics.complaints.labels("honeypot").inc()
            return self._form(
                lang, host, token, values=values, errors=[tr("err_honeypot")], status=400
            )

        errors: list[Markup] = []
        invalid: list[str] = []
        if values["role"] not in ROLES:
            errors.append(tr("err_role"))
            invalid.append("role")
            values["role"] = ""
        if not values["reason"]:
            errors.append(tr("err_reason_empty"))
            invalid.append("reason")
        elif len(values["reason"]) > c.max_reason_chars:
            errors.append(
                tr("err_reason_long", length=len(values["reason"]), max=c.max_reason_chars)
            )
            invalid.append("reason")
        if len(values["contact"]) > c.max_contact_chars:
            errors.append(
                tr("err_contact_long", length=len(values["contact"]), max=c.max_contact_chars)
            )
            invalid.append("contact")
        if values["language"] not in self.translators:
            errors.append(tr("err_language"))
            invalid.append("language")
            values["language"] = lang
        if errors:
            self.metrics.complaints.labels("invalid").inc()
            return self._form(
                lang, host, token, values=values, errors=errors, invalid=tuple(invalid), status=422
            )

        client = self._client(request)
        entry_key = parsed.entry_id
        for limiter, key, message in (
            (self.limit_client, client, "err_rate_client"),
            (self.limit_entry, entry_key, "err_rate_entry"),
            (self.limit_total, None, "err_rate_total"),
        ):
            if not limiter.allowed(key):
                self.metrics.complaints.labels("rate_limited").inc()
                wait = limiter.retry_after()
                err = tr(message, minutes=max(1, math.ceil(wait / 60)))
                return self._form(
                    lang,
                    host,
                    token,
                    values=values,
                    errors=[err],
                    status=429,
                    headers={"Retry-After": str(wait)},
                )

        try:
            ticket = await self.outbox.store(
                NewComplaint(
                    form_nonce=parsed.nonce,
                    entry_id=parsed.entry_id,
                    host=parsed.host,
                    role=values["role"],
                    reason=values["reason"],
                    contact=values["contact"],
                    language=values["language"],
                    received=int(time.time()),
                )
            )
        except DuplicateForm as dup:
            self.metrics.complaints.labels("duplicate").inc()
            return self.message(
                lang,
                409,
                [tr("err_duplicate", ticket=_bdi(dup.ticket))],
                next_href=f"/complaint/status?lang={lang}",
                next_label=tr("status_link"),
            )
        except StorageError as exc:
            self.metrics.complaints.labels("storage_error").inc()
            log.error("cannot store a complaint", extra={"fields": {"error": str(exc)}})
            return self._form(
                lang, host, token, values=values, errors=[tr("err_storage")], status=503
            )
        self.limit_client.hit(client)
        self.limit_entry.hit(entry_key)
        self.limit_total.hit()
        self.metrics.complaints.labels("stored").inc()
        self.on_stored()
        body = self.render("received.html", lang, ticket=ticket.ticket, secret=ticket.secret)
        return self.respond(body, lang, 200)

    # ------------------------------------------------------------ status page

    async def status(self, request: web.Request) -> web.Response:
        lang = self.language(request)
        tr = self.translators[lang]
        if self.outbox is None:
            return self._complaints_off(lang)
        if request.method == "POST":
            form = await self._read_form(request, lang)
            if isinstance(form, web.Response):
                return form
        else:
            form = request.query
        values = {
            "ticket": clean_text(form.get("ticket", ""))[:40],
            "secret": clean_text(form.get("secret", ""))[:60],
        }
        if request.method != "POST" and not values["ticket"] and not values["secret"]:
            return self._status_page(lang, values)
        if not values["ticket"] or not values["secret"]:
            return self._status_page(lang, values, [tr("err_status_missing")], 422)
        client = self._client(request)
        if not self.limit_status.allowed(client):
            wait = self.limit_status.retry_after()
            err = tr("err_rate_status", minutes=max(1, math.ceil(wait / 60)))
            return self._status_page(lang, values, [err], 429, {"Retry-After": str(wait)})
        self.limit_status.hit(client)
        item = await self.outbox.lookup(values["ticket"], values["secret"])
        if item is None:
            return self._status_page(lang, values, [tr("err_status_not_found")], 404)
        values["ticket"] = item["ticket"]
        return self._status_page(lang, values, item=item)

    def _status_page(
        self,
        lang: str,
        values: dict[str, str],
        errors: list[Markup] | None = None,
        status: int = 200,
        headers: dict | None = None,
        item: dict | None = None,
    ) -> web.Response:
        extra: dict[str, Any] = {"item": item, "form": values, "errors": errors or []}
        if item is not None:
            tr = self.translators[lang]
            ctx = self._base_context(lang)
            who = {"authority": ctx["authority"], "operator": ctx["operator"]}
            if item["state"] == PENDING:
                code, text = "received", tr("status_received", **who)
            elif item["state"] == UNDELIVERABLE:
                code, text = "undeliverable", tr("status_undeliverable", **who)
            elif item["state"] == FORWARDED and item["status"] in ("upheld", "rejected"):
                code = item["status"]
                text = tr(f"status_{code}", date=_date(item["decided"]))
            else:
                code, text = "forwarded", tr("status_forwarded", **who)
            extra.update(status=code, status_text=text, received=_date(item["received"]))
        return self.respond(self.render("status.html", lang, **extra), lang, status, headers)


def make_app(service: StopPage) -> web.Application:
    app = web.Application(client_max_size=service.config.server.max_body_bytes)
    app.on_response_prepare.append(service.security_headers)
    app.router.add_get("/complaint", service.complaint_form)
    app.router.add_post("/complaint", service.submit)
    app.router.add_get("/complaint/status", service.status)
    app.router.add_post("/complaint/status", service.status)
    app.router.add_route("*", "/{tail:.*}", service.page)
    return app
