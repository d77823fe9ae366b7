"""The officers' console in a real headless Chromium against a real authority on loopback.

Officers sign in with password and TOTP, act through the pages, and the authority's own rules
answer: four-eyes, roles, deactivation. Hostile pages on another site (http://localhost:…, a
different site from http://127.0.0.1:…) try cross-site forms and framing. axe-core (vendored in
tests/vendor/axe-core) checks every page in English and Arabic. Screenshots of every page are
kept in tests/artefacts/console/ (git-ignored; CORDON_TEST_ARTEFACTS moves it); the path is
printed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pyotp
import pytest
from aiohttp import web
from authority_fixtures import RunningAuthority, start_authority
from test_stoppage_a11y import ARTEFACTS, axe_violations
from test_stoppage_browser import DevTools, devtools
from test_stoppage_support import wait_for

from blocklist.authority.console.accounts import Accounts
from blocklist.authority.roles import SYSTEM

pytestmark = pytest.mark.tools("chromium")
DESKTOP = (1280, 900)
PASSWORD = "long enough pass phrase"
PAYLOAD = (
    '"><script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    '<svg onload="window.__xss=3"></svg>\''
)
LINKS_TO = (
    "[...document.querySelectorAll('a, link, img, iframe')].filter(e =>"
    " (e.href || e.src || '').includes(%s) || (e.tagName == 'A' && e.textContent.includes(%s)))"
    ".length"
)
FOREIGN_RESOURCES = (
    "performance.getEntriesByType('resource').map(r => r.name)"
    ".filter(u => !u.startsWith(location.origin + '/'))"
)
INJECTED = "document.querySelectorAll('script, img[src=\"x\"], svg[onload]').length"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningAuthority]:
    running = await start_authority(tmp_path / "authority", mount_console=True)
    yield running
    await running.client.close()


@pytest.fixture(scope="module")
def artefacts() -> Path:
    directory = ARTEFACTS / "console"
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {directory}")
    return directory


def base(api: RunningAuthority, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{api.client.port}/console/"


def enrol(api: RunningAuthority, name: str) -> pyotp.TOTP:
    """Password and TOTP for an officer, through the same setup steps the pages call."""
    accounts = Accounts(api.authority.store.db)
    code = accounts.reset(SYSTEM, name)
    totp = pyotp.TOTP(accounts.begin_setup(name, code, PASSWORD))
    accounts.finish_setup(name, code, totp.now())
    return totp


@contextlib.asynccontextmanager
async def browser(
    tmp_path: Path, name: str, lang: str = "en", *extra: str
) -> AsyncIterator[Browser]:
    async with devtools(
        tmp_path, 1, *extra, profile_name=name, lang=lang, size=DESKTOP, mobile=False
    ) as cdp:
        yield Browser(cdp)


class Browser:
    def __init__(self, cdp: DevTools) -> None:
        self.cdp = cdp

    async def go(self, url: str) -> int:
        return await self.cdp.load(url)

    async def js(self, expression: str):
        return await self.cdp.js(expression)

    async def fill(self, values: dict[str, str]) -> None:
        await self.js(
            f"""(() => {{ for (const [sel, v] of Object.entries({json.dumps(values)})) {{
                const el = document.querySelector(sel);
                if (el.type === 'radio' || el.type === 'checkbox') el.checked = true;
                else el.value = v;
            }} }})()"""
        )

    async def click(self, selector: str) -> int:
        return await self.cdp.load(f"document.querySelector({json.dumps(selector)}).click()")

    async def text(self, selector: str = "body") -> str:
        return await self.js(f"document.querySelector({json.dumps(selector)}).innerText")

    async def exists(self, selector: str) -> bool:
        return await self.js(f"document.querySelector({json.dumps(selector)}) !== null")

    async def path(self) -> str:
        return await self.js("location.pathname")

    async def sign_in(self, api: RunningAuthority, name: str, totp: pyotp.TOTP) -> int:
        await self.go(base(api) + "login")
        await self.fill({"#name": name, "#password": PASSWORD, "#code": totp.now()})
        return await self.click("main button[type=submit]")

    async def post(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """A form built in the page and posted (same origin, with its cookies): a forged
        request, since the console's CSP allows no script of its own to fetch."""
        status = await self.cdp.load(
            f"""(() => {{ const f = document.createElement('form');
                f.method = 'post'; f.action = {json.dumps(path)};
                for (const [k, v] of Object.entries({json.dumps(fields)})) {{
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }}
                document.body.appendChild(f); f.submit(); }})()"""
        )
        return status, await self.text("body")

    async def csrf(self) -> str:
        return await self.js("document.querySelector('input[name=csrf]').value")

    async def screenshot(self, path: Path) -> None:
        await self.cdp.screenshot(path)


async def entry_count(api: RunningAuthority) -> int:
    _, body = await api.call("admin", "GET", "/v1/entries")
    return len(body["entries"])


# ---------------------------------------------------------------- sign-in


async def test_officer_created_in_the_console_sets_up_totp_and_signs_in(
    api: RunningAuthority, tmp_path: Path
) -> None:
    admin = enrol(api, "admin")
    async with browser(tmp_path, "admin") as b:
        assert await b.sign_in(api, "admin", admin) == 200
        assert await b.path() == "/console/"
        # Cookies: HttpOnly, SameSite=Strict, not readable by scripts.
        cookies = (await b.cdp.call("Network.getCookies"))["cookies"]
        session = next(c for c in cookies if c["name"] == "console_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert "console_session" not in await b.js("document.cookie")
        await b.go(base(api) + "officers")
        await b.fill({"#new-name": "dora", "#new-role": "officer"})
        await b.click("#create-officer")
        code = await b.text("#setup-code")
        assert (await b.text("#api-token")).startswith("cdn_")
    async with browser(tmp_path, "dora") as d:
        await d.go(base(api) + "setup")
        await d.fill({"#name": "dora", "#setup_code": code, "#password": PASSWORD})
        assert await d.click("main button[type=submit]") == 200
        assert await d.exists(".qr-box svg")
        totp = pyotp.TOTP(await d.text("#totp-key"))
        await d.fill({"#code": totp.now()})
        assert await d.click("main button[type=submit]") == 200
        assert await d.exists("#setup-done")
        # A wrong code is refused, with one message whatever was wrong.
        await d.go(base(api) + "login")
        wrong = "000000" if totp.now() != "000000" else "111111"
        await d.fill({"#name": "dora", "#password": PASSWORD, "#code": wrong})
        assert await d.click("main button[type=submit]") == 401
        assert "check the name, password and code" in await d.text("#login-error")
        assert await d.sign_in(api, "dora", totp) == 200
        assert await d.path() == "/console/"
        assert "dora" in await d.text("header")
    _, tokens = await api.call("admin", "GET", "/v1/tokens")
    assert any(t["officer"] == "dora" for t in tokens["tokens"])  # the CLI's token too


async def test_deactivated_officer_is_signed_out_at_once_and_cli_tokens_keep_working(
    api: RunningAuthority, tmp_path: Path
) -> None:
    alice = enrol(api, "alice")
    async with browser(tmp_path, "alice") as b:
        await b.sign_in(api, "alice", alice)
        await b.go(base(api) + "entries")
        assert await b.path() == "/console/entries"  # signed in: the page, not the login form
        status, _ = await api.call("alice", "GET", "/v1/status")
        assert status == 200  # the API token works alongside the console session
        status, _ = await api.call(
            "admin", "POST", "/v1/officers/alice/deactivate", {"reason": "left the unit"}
        )
        assert status == 200
        await b.go(base(api) + "entries")
        assert await b.path() == "/console/login"
        status, _ = await api.call("alice", "GET", "/v1/status")
        assert status == 401


async def test_session_fixation_a_planted_cookie_is_never_promoted(
    api: RunningAuthority, tmp_path: Path
) -> None:
    bob = enrol(api, "bob")
    planted = "attacker-chosen-session-value-0123456789"
    async with browser(tmp_path, "bob") as b:
        await b.cdp.call("Network.setCookie", name="console_session", value=planted, url=base(api))
        await b.go(base(api))
        assert await b.path() == "/console/login"
        await b.sign_in(api, "bob", bob)
        assert await b.path() == "/console/"
        cookies = (await b.cdp.call("Network.getCookies"))["cookies"]
        value = next(c["value"] for c in cookies if c["name"] == "console_session")
        assert value != planted and len(value) >= 40
    async with (
        aiohttp.ClientSession(cookies={"console_session": planted}) as s,
        s.get(base(api), allow_redirects=False) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"].startswith("/console/login")


# ---------------------------------------------------------------- four eyes, publish


async def test_four_eyes_self_approval_refused_second_officer_approves_then_publish(
    api: RunningAuthority, tmp_path: Path
) -> None:
    bob, carol = enrol(api, "bob"), enrol(api, "carol")
    async with browser(tmp_path, "bob") as b:
        await b.sign_in(api, "bob", bob)
        await b.go(base(api) + "entries/new")
        await b.fill(
            {"#value": "four-eyes.example", "#hosting_country": "NL", "#evidence": "EV-4E"}
        )
        await b.click("main button[type=submit]")
        entry_path = await b.path()
        assert entry_path.startswith("/console/entries/")
        assert await b.text("#entry-status") == "pending"
        assert not await b.exists("#approve")
        assert await b.exists("#own-entry")
        # Forcing the approval from his own page is refused by the store's four-eyes rule.
        status, body = await b.post(entry_path + "/approve", {"csrf": await b.csrf()})
        assert status == 403 and "another approver must approve it" in body
        await b.go(base(api) + entry_path.removeprefix("/console/"))
        assert await b.text("#entry-status") == "pending"
    async with browser(tmp_path, "carol") as c:
        await c.sign_in(api, "carol", carol)
        await c.go(base(api))
        assert "four-eyes.example" not in await c.text("main")  # ids only on the dashboard
        assert await c.exists("#to-approve a")
        await c.go(f"http://127.0.0.1:{api.client.port}{entry_path}")
        assert await c.click("#approve") == 200
        assert await c.text("#entry-status") == "active"
        await c.go(base(api) + "publish")
        assert await c.text("#to-add") == "1"
        assert "four-eyes.example" in await c.text("main")
        # The value is text: no link to it, nothing fetched from anywhere but the console.
        value = json.dumps("four-eyes.example")
        assert await c.js(LINKS_TO % (value, value)) == 0
        assert await c.js(FOREIGN_RESOURCES) == []
        assert await c.click("#publish") == 200
        assert "1" in await c.text("#published")
    _, status = await api.call("admin", "GET", "/v1/status")
    assert status["serial"] == 1 and status["entries_published"] == 1
    _, log = await api.call("admin", "GET", "/v1/audit")
    approvals = [r for r in log["records"] if r["action"] == "entry.approve"]
    assert [r["actor"] for r in approvals] == ["officer:carol"]


async def test_import_preview_writes_nothing_then_submits_a_batch(
    api: RunningAuthority, tmp_path: Path
) -> None:
    alice = enrol(api, "alice")
    lines = "\n".join(
        [
            "one.example,NL,EV-1",
            "www.protected.example,NL,EV-2",
            "three.example,ZZ,EV-3",
            "four.example,DE,EV-4",
            "one.example,NL,EV-5",
        ]
    )
    async with browser(tmp_path, "alice") as b:
        await b.sign_in(api, "alice", alice)
        await b.go(base(api) + "import")
        await b.fill({"#source": "hotline export", "#lines": lines})
        assert await b.click("#preview") == 200
        assert await b.text("#accepted") == "2"
        assert await b.text("#refused") == "3"
        refusals = await b.text("#refusals")
        for line in ("2", "3", "5"):
            assert f"\n{line}\t" in refusals
        assert "protected" in refusals and "ZZ" in refusals
        accepted = await b.text("#accepted-lines")
        assert "one.example" in accepted and "four.example" in accepted
        assert "three.example" not in accepted
        assert await entry_count(api) == 0  # the preview wrote nothing
        assert await b.click("#submit-batch") == 200
        assert (await b.path()).startswith("/console/batches/")
        assert await b.text("#batch-status") == "pending"
        assert not await b.exists("#accept")  # the importer cannot accept their own batch
        await b.go(base(api) + "entries")
        await b.fill({"#status": "pending", "#country": "de"})
        await b.click("main button[type=submit]")
        listed = await b.text("table")
        assert "four.example" in listed and "one.example" not in listed
    _, body = await api.call("admin", "GET", "/v1/entries?status=pending")
    assert sorted(e["value"] for e in body["entries"]) == ["four.example", "one.example"]


async def test_complaint_decided_in_the_console_delists_the_entry(
    api: RunningAuthority, tmp_path: Path
) -> None:
    _, entry = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "complained.example", "hosting_country": "NL", "evidence": "EV-C"},
    )
    await api.call("bob", "POST", f"/v1/entries/{entry['id']}/approve")
    status, complaint = await api.call(
        "isp",
        "POST",
        "/v1/complaints",
        {
            "idempotency_key": "console-test-0001",
            "received": int(time.time()),
            "entry_id": entry["id"],
            "host": "complained.example",
            "role": "site_owner",
            "reason": "The page was removed last week.",
        },
    )
    assert status == 201, complaint
    carol = enrol(api, "carol")
    async with browser(tmp_path, "carol") as c:
        await c.sign_in(api, "carol", carol)
        await c.go(base(api) + "complaints")
        assert await c.click("td a") == 200
        assert "removed last week" in await c.text("#complaint-reason")
        await c.fill({"input[value=upheld]": "", "#reasons": "Checked: the content is gone."})
        assert await c.click("#decide") == 200
        assert await c.text("#complaint-status") == "upheld"
    _, after = await api.call("admin", "GET", f"/v1/entries/{entry['id']}")
    assert after["status"] == "delisted"


# ---------------------------------------------------------------- hostile input and sites


@contextlib.asynccontextmanager
async def hostile_site(html: str) -> AsyncIterator[str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://localhost:{port}/"  # another site than 127.0.0.1
    finally:
        await runner.cleanup()


async def test_csrf_cross_site_form_and_tokenless_post_are_refused(
    api: RunningAuthority, tmp_path: Path
) -> None:
    alice = enrol(api, "alice")
    form = f"""<form id=f method=post action="{base(api)}entries">
      <input name=value value=csrf.example><input name=hosting_country value=NL>
      <input name=evidence value=EV></form><script>document.getElementById('f').submit()</script>"""
    async with browser(tmp_path, "alice") as b:
        await b.sign_in(api, "alice", alice)
        async with hostile_site(form) as evil:
            await b.cdp.call("Page.navigate", url=evil)

            async def landed() -> str | None:
                with contextlib.suppress(AssertionError, TimeoutError):
                    done = await b.js("document.readyState") == "complete"
                    if done and await b.path() in ("/console/entries", "/console/login"):
                        return await b.text("body")
                return None

            # Refused: no cookie crosses sites (SameSite=Strict), the Origin is foreign and
            # the form has no token.
            assert "reload the page" in await wait_for(landed, 15, 0.1)
        assert await entry_count(api) == 0
        await b.go(base(api) + "entries/new")
        # Same origin, with the session cookie, but without the token: refused.
        status, body = await b.post(
            "/console/entries",
            {"value": "csrf.example", "hosting_country": "NL", "evidence": "EV"},
        )
        assert status == 403 and "reload the page" in body
        status, _ = await b.post(
            "/console/entries",
            {"value": "csrf.example", "hosting_country": "NL", "evidence": "EV", "csrf": "x" * 43},
        )
        assert status == 403
        assert await entry_count(api) == 0
        status, _ = await b.post(
            "/console/entries",
            {
                "value": "csrf.example",
                "hosting_country": "NL",
                "evidence": "EV",
                "csrf": await b.csrf(),
            },
        )
        assert status == 200 and (await b.path()).startswith("/console/entries/")
        assert await entry_count(api) == 1


async def test_clickjacking_framing_is_refused_and_headers_are_strict(
    api: RunningAuthority, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("login", "setup", "static/console.css", "", "entries"):
            async with s.get(base(api) + path) as resp:
                assert resp.headers["X-Frame-Options"] == "DENY"
                csp = resp.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
                assert "script-src" not in csp  # no script at all
                assert resp.headers["Referrer-Policy"] == "same-origin"
    frame = f'<iframe id=f src="{base(api)}login" width=600 height=400></iframe>'
    async with (
        # One process for all frames, so the frame tree shows the refused cross-site frame.
        browser(tmp_path, "victim", "en", "--disable-site-isolation-trials") as b,
        hostile_site(frame) as evil,
    ):
        await b.go(evil)

        async def framed_url() -> str | None:
            tree = (await b.cdp.call("Page.getFrameTree"))["frameTree"]
            children = tree.get("childFrames") or []
            return children[0]["frame"].get("unreachableUrl") or None if children else None

        # Chromium replaces a refused frame by an error page; the console never renders.
        assert (await wait_for(framed_url, 10)).startswith(base(api))


async def test_xss_in_every_field_is_shown_as_text(api: RunningAuthority, tmp_path: Path) -> None:
    alice, bob = enrol(api, "alice"), enrol(api, "bob")
    status, complaint = await api.call(
        "isp",
        "POST",
        "/v1/complaints",
        {
            "idempotency_key": "console-xss-00001",
            "received": int(time.time()),
            "host": "xss.example",
            "role": "other",
            "reason": PAYLOAD,
            "contact": PAYLOAD[:200],
        },
    )
    assert status == 201, complaint
    pages: list[str] = []
    async with browser(tmp_path, "alice") as b:
        await b.sign_in(api, "alice", alice)
        await b.go(base(api) + "entries/new")
        # A refused value is echoed in the error and the form: as text.
        await b.fill(
            {
                "#value": "<img src=x onerror=window.__xss=4>.example",
                "#kind": "domain",
                "#hosting_country": "NL",
                "#evidence": "E",
            }
        )
        assert await b.click("main button[type=submit]") == 422
        assert "<img src=x" in await b.text("#form-error")
        assert await b.js(INJECTED) == 0 and await b.js("window.__xss") is None
        # The URL canonical form keeps these characters: the value itself is hostile.
        await b.go(base(api) + "entries/new")
        await b.fill(
            {"#value": PAYLOAD, "#kind": "url", "#hosting_country": "NL", "#evidence": "E"}
        )
        await b.click("main button[type=submit]")
        assert await b.js(INJECTED) == 0 and await b.js("window.__xss") is None
        pages.append(await b.path())
        await b.go(base(api) + "entries/new")
        await b.fill(
            {"#value": "xss.example", "#hosting_country": "NL", "#evidence": PAYLOAD[:2000]}
        )
        await b.fill({"#notes": PAYLOAD})
        await b.click("main button[type=submit]")
        entry_path = await b.path()
        assert PAYLOAD in await b.text("#evidence") and PAYLOAD in await b.text("#notes")
        pages.append(entry_path)
        await b.go(base(api) + "import")
        await b.fill(
            {"#source": PAYLOAD[:200], "#lines": PAYLOAD + ",NL,EV\nok.example,NL," + PAYLOAD}
        )
        await b.click("#preview")
        assert await b.js(INJECTED) == 0 and await b.js("window.__xss") is None
        assert await b.click("#submit-batch") == 200
        pages.append(await b.path())
        await b.go(base(api) + "entries?q=" + aiohttp.helpers.quote(PAYLOAD, safe=""))
        assert await b.js("document.querySelector('#q').value") == PAYLOAD[:200]
        assert await b.js(INJECTED) == 0
        await b.go(base(api) + "setup")
        await b.fill({"#name": PAYLOAD[:64], "#setup_code": PAYLOAD, "#password": PAYLOAD})
        await b.click("main button[type=submit]")
        assert await b.js(INJECTED) == 0 and await b.js("window.__xss") is None
    async with browser(tmp_path, "bob") as b:
        await b.sign_in(api, "bob", bob)
        await b.go(f"http://127.0.0.1:{api.client.port}{entry_path}")
        await b.fill({"#reject-reason": PAYLOAD})
        await b.click("#reject")
        await b.go(base(api) + f"complaints/{complaint['complaint_id']}")
        await b.fill({"input[value=rejected]": "", "#reasons": PAYLOAD})
        await b.click("#decide")
        pages += [
            "/console/",
            "/console/entries",
            "/console/audit",
            "/console/complaints?status=all",
            f"/console/complaints/{complaint['complaint_id']}",
        ]
        for path in pages:
            await b.go(f"http://127.0.0.1:{api.client.port}{path}")
            assert await b.js(INJECTED) == 0, path
            assert await b.js("window.__xss") is None, path
        await b.go(f"http://127.0.0.1:{api.client.port}{entry_path}")
        assert PAYLOAD in await b.text("main")  # the rejection reason, as typed
        await b.go(base(api) + f"complaints/{complaint['complaint_id']}")
        assert PAYLOAD in await b.text("#complaint-reason")


# ---------------------------------------------------------------- accessibility, screenshots


async def axe_serious(b: Browser) -> list[dict]:
    return [v for v in await axe_violations(b.cdp) if v["impact"] in ("serious", "critical")]


async def test_every_page_in_english_and_arabic_passes_axe_with_screenshots(
    api: RunningAuthority, tmp_path: Path, artefacts: Path
) -> None:
    admin = enrol(api, "admin")
    _, entry = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "axe.example", "hosting_country": "NL", "evidence": "EV-A", "notes": "n"},
    )
    _, pending = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "p.example", "hosting_country": "NL", "evidence": "E"},
    )
    await api.call("bob", "POST", f"/v1/entries/{entry['id']}/approve")
    await api.call("bob", "POST", "/v1/publish")
    _, batch = await api.call(
        "alice",
        "POST",
        "/v1/batches",
        {"lines": [{"value": "b.example", "hosting_country": "DE", "evidence": "E"}]},
    )
    _, complaint = await api.call(
        "isp",
        "POST",
        "/v1/complaints",
        {
            "idempotency_key": "console-axe-00001",
            "received": int(time.time()),
            "entry_id": entry["id"],
            "host": "axe.example",
            "role": "visitor",
            "reason": "Why?",
        },
    )
    pages = {
        "dashboard": "",
        "entries": "entries",
        "entry": f"entries/{entry['id']}",
        "entry-pending": f"entries/{pending['id']}",
        "entry-new": "entries/new",
        "import": "import",
        "batch": f"batches/{batch['batch_id']}",
        "publish": "publish",
        "complaints": "complaints",
        "complaint": f"complaints/{complaint['complaint_id']}",
        "lifecycle": "lifecycle",
        "compliance": "compliance",
        "audit": "audit",
        "officers": "officers",
    }
    failures: dict[str, list] = {}
    async with browser(tmp_path, "admin") as b:
        for lang in ("en", "ar"):
            for name, path in {"login": "login", "setup": "setup"}.items():
                await b.go(base(api) + path + f"?lang={lang}")
                assert await b.js("document.documentElement.lang") == lang
                failures[f"{name}-{lang}"] = await axe_serious(b)
                await b.screenshot(artefacts / f"{name}-{lang}.png")
            code = Accounts(api.authority.store.db).reset(SYSTEM, "carol")
            await b.fill({"#name": "carol", "#setup_code": code, "#password": PASSWORD})
            await b.click("main button[type=submit]")
            assert await b.exists(".qr-box svg")
            failures[f"setup-qr-{lang}"] = await axe_serious(b)
            await b.screenshot(artefacts / f"setup-qr-{lang}.png")
        await b.sign_in(api, "admin", admin)
        for lang in ("en", "ar"):
            await b.go(base(api) + f"?lang={lang}")
            for name, path in pages.items():
                assert await b.go(base(api) + path) == 200, path
                assert await b.js("document.documentElement.lang") == lang
                assert await b.js("document.documentElement.dir") == (
                    "rtl" if lang == "ar" else "ltr"
                )
                failures[f"{name}-{lang}"] = await axe_serious(b)
                await b.screenshot(artefacts / f"{name}-{lang}.png")
            await b.go(base(api) + "import")
            await b.fill({"#lines": "x.example,NL,E\nbad,ZZ,E"})
            await b.click("#preview")
            failures[f"import-preview-{lang}"] = await axe_serious(b)
            await b.screenshot(artefacts / f"import-preview-{lang}.png")
    assert {k: v for k, v in failures.items() if v} == {}
    assert len(list(artefacts.glob("*.png"))) >= 2 * (len(pages) + 4)
