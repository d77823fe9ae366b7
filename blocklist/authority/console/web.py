"""The console's plumbing: the aiohttp sub-application, sessions, CSRF, security headers,
languages and page rendering. The pages themselves are in `views`.

Every page that acts calls the same store, lifecycle and complaints functions the API calls,
with the signed-in officer as the principal: roles, four-eyes and audit are theirs, not ours.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from blocklist.authority.console import i18n
from blocklist.authority.console.accounts import Accounts, Session, SignInPolicy
from blocklist.authority.errors import AuthorityError, http_status
from blocklist.authority.roles import may
from blocklist.authority.service import Authority

PREFIX = "/console"
MAX_FORM_BYTES = 4 * 1024 * 1024
AUTHORITY = web.AppKey("console_authority", Authority)
ACCOUNTS = web.AppKey("console_accounts", Accounts)
SETTINGS = web.AppKey("console_settings", dict)
SESSION = web.RequestKey("console_session", Session)
LANG = web.RequestKey("console_lang", str)
FORM = web.RequestKey("console_form", dict)
# Pages reachable without a session (they carry their own pre-session CSRF cookie).
OPEN_PATHS = frozenset({f"{PREFIX}/login", f"{PREFIX}/setup", f"{PREFIX}/setup/confirm"})

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: Chromium then sends "Origin: null" on form posts, which CSRF refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("blocklist.authority.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "—"


class Refused(Exception):
    """A console-level refusal (CSRF, sign-in required) rendered as a page."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


def authority(request: web.Request) -> Authority:
    return request.app[AUTHORITY]


def accounts(request: web.Request) -> Accounts:
    return request.app[ACCOUNTS]


def session(request: web.Request) -> Session:
    return request[SESSION]


def secure(request: web.Request) -> bool:
    mode = request.app[SETTINGS]["cookie_secure"]
    return mode == "always" or (mode == "auto" and request.secure)


def cookie_name(request: web.Request, base: str) -> str:
    # __Host- cookies are only accepted over TLS, for the whole host, from this host alone.
    return f"__Host-{base}" if secure(request) else base


def set_cookie(resp: web.StreamResponse, request: web.Request, base: str, value: str) -> None:
    resp.set_cookie(
        cookie_name(request, base),
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure(request),
    )


async def form(request: web.Request) -> dict[str, str]:
    return request[FORM]


def field(data: dict[str, str], name: str, limit: int = 2000) -> str:
    return str(data.get(name, ""))[:limit]


def url(path: str, **query: Any) -> str:
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return PREFIX + path + ("?" + urlencode(query) if query else "")


def redirect(path: str, **query: Any) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(url(path, **query))


def render(request: web.Request, template: str, code: int = 200, **ctx: Any) -> web.Response:
    lang = request.get(LANG, "en")
    who = request.get(SESSION)
    here = request.path
    body = _env.get_template(template).render(
        t=i18n.translator(lang),
        lang=lang,
        dir="rtl" if lang in i18n.RTL else "ltr",
        languages=[(code, i18n.NAMES[code], here + "?lang=" + code) for code in i18n.LANGUAGES],
        user=who.principal if who else None,
        csrf=who.csrf if who else request.get(PRE_CSRF, ""),
        may=(lambda p: who is not None and may(who.principal, p)),
        url=url,
        here=here,
        **ctx,
    )
    resp = web.Response(text=body, content_type="text/html", charset="utf-8", status=code)
    if request.get(PRE_CSRF) and not who:
        set_cookie(resp, request, "console_pre", request[PRE_CSRF])
    return resp


PRE_CSRF = web.RequestKey("console_pre_csrf", str)


def same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        # Browsers send Origin on every cross-site POST; its absence means same-origin or a
        # non-browser client, and the CSRF token still has to match.
        return origin is None
    return origin == f"{request.scheme}://{request.host}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await _guarded(request, handler)
    except Refused as exc:
        return render(request, "error.html", code=exc.status, message=words(request)(exc.key))
    except AuthorityError as exc:
        return render(request, "error.html", code=http_status(exc), message=str(exc))
    except web.HTTPNotFound:
        return render(request, "error.html", code=404, message=words(request)("page_not_found"))


def words(request: web.Request) -> Callable[[str], str]:
    return i18n.translator(request.get(LANG, "en"))


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    asked = request.query.get("lang")
    lang = i18n.pick(
        request.headers.get("Accept-Language"), asked, request.cookies.get("console_lang")
    )
    request[LANG] = lang
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
    secret = request.cookies.get(cookie_name(request, "console_session"), "")
    who = await asyncio.to_thread(accounts(request).session, secret) if secret else None
    if who is not None:
        request[SESSION] = who
    pre = request.cookies.get(cookie_name(request, "console_pre"), "")
    pre = pre if 20 <= len(pre) <= 100 else ""
    request[PRE_CSRF] = pre or secrets.token_urlsafe(24)
    if request.method == "POST":
        if not same_origin(request):
            raise Refused(403, "csrf")
        data = dict(await request.post())
        request[FORM] = {k: v for k, v in data.items() if isinstance(v, str)}
        expected = who.csrf if who is not None else pre
        given = request[FORM].get("csrf", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Refused(403, "csrf")
    if (
        who is None
        and request.path not in OPEN_PATHS
        and not request.path.startswith(f"{PREFIX}/static/")
    ):
        raise web.HTTPSeeOther(url("/login", lang=asked if asked in i18n.LANGUAGES else None))
    resp = await handler(request)
    if asked in i18n.LANGUAGES:
        resp.set_cookie(
            "console_lang",
            asked,
            path="/",
            samesite="Strict",
            httponly=True,
            secure=secure(request),
        )
    return resp


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def make_console_app(auth: Authority) -> web.Application:
    from blocklist.authority.console import views

    c = auth.config.console
    app = web.Application(middlewares=[console_middleware])
    app[AUTHORITY] = auth
    app[ACCOUNTS] = Accounts(
        auth.store.db,
        SignInPolicy(
            max_failures=c.max_failures,
            lockout_seconds=int(c.lockout_minutes * 60),
            idle_seconds=int(c.idle_minutes * 60),
            max_age_seconds=int(c.max_age_hours * 3600),
        ),
    )
    app[SETTINGS] = {"cookie_secure": c.cookie_secure}
    views.add_routes(app)
    app.on_response_prepare.append(security_headers)
    return app


def mount(api: web.Application, auth: Authority) -> None:
    """Serve the console under /console/ of the API application (when enabled)."""
    if auth.config.console.enabled:
        api.add_subapp(PREFIX + "/", make_console_app(auth))
