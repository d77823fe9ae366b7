"""The stop page's HTTP application: blocking notices, the complaint form and the status page.

Any Host is answered. A host (or host + path, for URL entries) on the verified list gets the
notice with status 451 (RFC 7725); any other gets a neutral page with status 200 that says this
server only shows blocking notices. What each request gets is decided by the pure functions of
stoppage.views; pages come from stoppage.pages, rendered once per language and list version with
the host and other per-request values inserted escaped. Pages carry a strict CSP (the only style
is inline and allowed by its hash; no script, no image, no third-party resource), no cookies, and
`Cache-Control: no-store`. Nothing about a visitor is logged or stored: the access log is off,
other loggers are filtered (stoppage.privacy), and the only record of a notice shown is an
hourly counter per list entry id.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from markupsafe import Markup
from prometheus_client import CollectorRegistry

from blocklist.sync.verified import VerifiedList
from stoppage import views
from stoppage.config import StoppageConfig
from stoppage.counters import HourlyCounters, StopPageMetrics
from stoppage.i18n import REFERENCE_LANGUAGE, Translator, load_catalogues
from stoppage.limits import WindowLimit
from stoppage.matching import Matcher, canonical_host
from stoppage.outbox import DuplicateForm, NewComplaint, Outbox, StorageError
from stoppage.pages import Renderer, bdi_ltr
from stoppage.tokens import FormTokens, TokenError, TokenProblem
from stoppage.views import ROLES, clean_text, same_site_path, strip_lang_param

__all__ = ["ROLES", "StopPage", "clean_text", "make_app", "same_site_path", "strip_lang_param"]

log = logging.getLogger("cordon.stoppage")

FORM_TYPE = "application/x-www-form-urlencoded"
_LANG_CACHE_LIMIT = 1024


def _date(ts: int | None) -> Markup:
    if ts is None:
        return Markup("")
    return bdi_ltr(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)))


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
        # A message missing from a deployment's language falls back to English, then the default.
        fallbacks = [reference[REFERENCE_LANGUAGE], catalogues[self.default_language]]
        self.catalogues = catalogues
        self.translators = {c: Translator(cat, fallbacks) for c, cat in catalogues.items()}

        self.outbox = outbox
        self.tokens = tokens
        self.complaints_enabled = config.complaints.enabled and outbox is not None
        self.renderer = Renderer(config, catalogues, self.translators, self.complaints_enabled)
        self.csp = self.renderer.csp
        self.blocked_by = page.blocked_by_url or config.authority.website
        self.on_stored = on_stored or (lambda: None)
        m = config.metrics
        self.counters = counters or HourlyCounters(m.keep_hours, max_entries=m.max_entries_per_hour)
        self.registry = registry or CollectorRegistry()
        self.metrics = StopPageMetrics(self.registry, m.max_entry_labels)
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
        self.trusted_proxies = frozenset(
            ipaddress.ip_address(a).compressed for a in config.server.trusted_proxies
        )
        self.security = {
            "Content-Security-Policy": self.csp,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
            "Server": "stoppage",
        }
        self._page_headers: dict[tuple[str, bool], dict[str, str]] = {}
        self._negotiated: dict[tuple[str | None, str], str] = {}
        self.matcher = Matcher(None)

    # ------------------------------------------------------------ list

    def set_list(self, verified: VerifiedList | None) -> None:
        """Swap in a new verified list (the watcher's callback)."""
        matcher = Matcher(verified)
        self.renderer.set_list(matcher.authority, matcher.serial)
        self.matcher = matcher
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
        chosen = request.query.get("lang") if "lang=" in request.query_string else None
        header = request.headers.get("Accept-Language", "")
        key = (chosen, header)
        lang = self._negotiated.get(key)
        if lang is None:
            lang = views.choose_language(chosen, header, self.languages, self.default_language)
            if len(self._negotiated) >= _LANG_CACHE_LIMIT:
                self._negotiated = {}
            self._negotiated[key] = lang
        return lang

    def _base_context(self, lang: str) -> dict[str, Any]:
        return self.renderer.base_context(lang)

    def render(self, template: str, lang: str, **extra: Any) -> bytes:
        return self.renderer.render(template, lang, **extra)

    def _headers(self, lang: str, blocked: bool) -> dict[str, str]:
        key = (lang, blocked)
        headers = self._page_headers.get(key)
        if headers is None:
            headers = {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Language": lang,
                "Vary": "Accept-Language",
                **self.security,
            }
            if blocked:
                headers["Link"] = f'<{self.blocked_by}>; rel="blocked-by"'
            self._page_headers[key] = headers
        return headers

    def respond(
        self, body: bytes, lang: str, status: int = 200, headers: dict | None = None
    ) -> web.Response:
        resp = web.Response(body=body, status=status, headers=self._headers(lang, status == 451))
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
            title=tr.bare("err_title"),
            errors=errors,
            next_href=next_href,
            next_label=next_label,
        )
        return self.respond(body, lang, status, headers)

    async def security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        # Responses built here already carry them; this covers aiohttp's own (404, 405, 413…).
        h = response.headers
        if "Content-Security-Policy" not in h:
            h.update(self.security)
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
        view = views.notice(host, request.raw_path, lang, self.matcher)
        if view.entry_id is None:
            self.metrics.neutral_pages.inc()
        else:
            self.counters.hit(view.entry_id)
            self.metrics.blocked_hit(view.entry_id)
            self.metrics.blocked_pages.inc()
        body = self.renderer.fill(view.kind, lang, view.values)
        return web.Response(
            body=body, status=view.status, headers=self._headers(lang, view.status == 451)
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
        ctx = self.renderer.form_context(
            lang,
            bdi_ltr(host),
            token,
            values=values,
            errors=errors,
            invalid=invalid,
            switch_base=switch_base,
        )
        return self.respond(self.render("form.html", lang, **ctx), lang, status, headers)

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
        view = views.complaint_form(host, request.query.get("path", "/"), lang, self.matcher)
        if view.kind == "not_blocked":
            return self._not_blocked(lang)
        values = dict(view.values, token=self.tokens.issue(view.values["host"], view.entry_id))
        return self.respond(self.renderer.fill("form", lang, values), lang, view.status)

    async def _read_form(self, request: web.Request, lang: str) -> Any:
        """The posted form fields, or a response that says what is wrong with the request."""
        tr = self.translators[lang]
        limit = self.config.body_limit
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

    def _client(self, request: web.Request) -> str:
        """The in-memory rate-limit key for the current window only; never logged or stored."""
        remote = request.remote or "-"
        if self.trusted_proxies:
            try:
                trusted = ipaddress.ip_address(remote).compressed in self.trusted_proxies
            except ValueError:
                trusted = False
            forwarded = request.headers.get("X-Forwarded-For", "")
            if trusted and forwarded:
                last = forwarded.rsplit(",", 1)[-1].strip()
                try:
                    return ipaddress.ip_address(last).compressed
                except ValueError:
                    return remote
        return remote

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
                err = tr("err_token_expired", count=hours)
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

        problems = views.check_complaint(
            values, self.languages, c.max_reason_chars, c.max_contact_chars
        )
        if problems:
            self.metrics.complaints.labels("invalid").inc()
            for p in problems:
                if p.field in ("role", "language"):
                    values[p.field] = "" if p.field == "role" else lang
            return self._form(
                lang,
                host,
                token,
                values=values,
                errors=[tr(p.key, **dict(p.values)) for p in problems],
                invalid=tuple(p.field for p in problems),
                status=422,
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
                err = tr(message, count=max(1, math.ceil(wait / 60)))
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
                [tr("err_duplicate", ticket=bdi_ltr(dup.ticket))],
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
        body = self.render(
            "received.html",
            lang,
            ticket=ticket.ticket,
            secret=ticket.secret,
            follow_url=self.follow_url(ticket.ticket, lang),
        )
        return self.respond(body, lang, 200)

    def follow_url(self, ticket: str, lang: str) -> str:
        """The stable status address of a ticket (it works after the host is unblocked)."""
        return f"{self.config.status_url}?ticket={ticket}&lang={lang}"

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
        if request.method != "POST" and not values["secret"]:
            # A bookmarked stable address carries the ticket only: ask for the secret.
            return self._status_page(lang, values)
        if not values["ticket"] or not values["secret"]:
            return self._status_page(lang, values, [tr("err_status_missing")], 422)
        client = self._client(request)
        if not self.limit_status.allowed(client):
            wait = self.limit_status.retry_after()
            err = tr("err_rate_status", count=max(1, math.ceil(wait / 60)))
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
            code, key = views.status_of(item)
            if code in ("upheld", "rejected"):
                text = tr(key, date=_date(item["decided"]))
            else:
                text = tr(key, authority=ctx["authority"], operator=ctx["operator"])
            extra.update(
                status=code,
                status_text=text,
                received=_date(item["received"]),
                follow_url=self.follow_url(item["ticket"], lang),
            )
        return self.respond(self.render("status.html", lang, **extra), lang, status, headers)


def make_app(service: StopPage) -> web.Application:
    app = web.Application(client_max_size=service.config.body_limit)
    app.on_response_prepare.append(service.security_headers)
    app.router.add_get("/complaint", service.complaint_form)
    app.router.add_post("/complaint", service.submit)
    app.router.add_get("/complaint/status", service.status)
    app.router.add_post("/complaint/status", service.status)
    app.router.add_route("*", "/{tail:.*}", service.page)
    return app
