"""The console over plain HTTP on loopback (no browser): cookies behind TLS, role refusals
from the store, lockout answers, and headers on every answer."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from authority_fixtures import start_authority
from test_console_browser import PASSWORD, enrol

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client() -> aiohttp.ClientSession:
    # aiohttp keeps no cookies from IP-address hosts unless told to.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(session: aiohttp.ClientSession, url: str, name: str, code: str):
    async with session.get(url + "login") as resp:
        csrf = CSRF.search(await resp.text()).group(1)
    return await session.post(
        url + "login",
        data={"csrf": csrf, "name": name, "password": PASSWORD, "code": code},
        allow_redirects=False,
    )


async def test_cookies_are_secure_with_host_prefix_behind_tls(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, mount_console=True, console={"cookie_secure": "always"})
    try:
        totp = enrol(api, "alice")
        url = f"http://127.0.0.1:{api.client.port}/console/"
        # The test client speaks plain HTTP: an unsafe jar keeps Secure cookies for it.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[url[:-9]])
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            async with s.get(url + "login") as resp:
                pre = resp.headers["Set-Cookie"]
            assert pre.startswith("__Host-console_pre=")
            assert "Secure" in pre and "HttpOnly" in pre and "SameSite=Strict" in pre
            resp = await sign_in(s, url, "alice", totp.now())
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
            assert cookie.startswith("__Host-console_session=") and "Secure" in cookie
            assert "Path=/" in cookie and "Domain" not in cookie
    finally:
        await api.client.close()


async def test_roles_are_the_stores_oversight_reads_but_cannot_add(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, mount_console=True)
    try:
        totp = enrol(api, "olga")
        url = f"http://127.0.0.1:{api.client.port}/console/"
        async with client() as s:
            assert (await sign_in(s, url, "olga", totp.now())).status == 303
            async with s.get(url + "entries") as resp:
                page = await resp.text()
            assert resp.status == 200 and "/console/entries/new" not in page
            assert "/console/import" not in page
            csrf = CSRF.search(page).group(1)
            async with s.post(
                url + "entries",
                data={"csrf": csrf, "value": "o.example", "hosting_country": "NL", "evidence": "E"},
            ) as resp:
                assert resp.status == 403
                assert "may not add or import entries" in await resp.text()
            async with s.post(url + "publish", data={"csrf": csrf}) as resp:
                assert resp.status == 403
            async with s.post(
                url + "officers", data={"csrf": csrf, "name": "x", "role": "admin"}
            ) as resp:
                assert resp.status == 403
        _, body = await api.call("admin", "GET", "/v1/entries")
        assert body["entries"] == []
    finally:
        await api.client.close()


async def test_lockout_is_answered_429_with_the_same_words_for_any_cause(tmp_path: Path) -> None:
    api = await start_authority(
        tmp_path, mount_console=True, console={"max_failures": 2, "lockout_minutes": 5}
    )
    try:
        totp = enrol(api, "bob")
        url = f"http://127.0.0.1:{api.client.port}/console/"
        async with client() as s:
            wrong = "000000" if totp.now() != "000000" else "111111"
            unknown = await sign_in(s, url, "nobody", totp.now())
            first = await sign_in(s, url, "bob", wrong)
            assert unknown.status == first.status == 401
            words = "check the name, password and code"
            assert words in await unknown.text() and words in await first.text()
            locked = await sign_in(s, url, "bob", wrong)
            assert locked.status == 429
            again = await sign_in(s, url, "bob", totp.now())  # right code, still locked
            assert again.status == 429 and "locked" in await again.text()
        _, log = await api.call("admin", "GET", "/v1/audit")
        assert "console.locked" in [r["action"] for r in log["records"]]
    finally:
        await api.client.close()


async def test_every_console_answer_carries_the_security_headers(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, mount_console=True)
    try:
        url = f"http://127.0.0.1:{api.client.port}/console/"
        async with client() as s:
            for path, status in [("login", 200), ("no-such-page", 404), ("static/x.js", 404)]:
                async with s.get(url + path, allow_redirects=False) as resp:
                    assert resp.status in (status, 303), path
                    assert resp.headers["X-Frame-Options"] == "DENY", path
                    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
                    assert resp.headers["Cache-Control"] == "no-store", path
            async with s.post(url + "login", data={"name": "x"}) as resp:
                assert resp.status == 403  # no CSRF token, even before sign-in
    finally:
        await api.client.close()


async def test_officer_admin_pages_follow_the_four_eyes_rules(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, mount_console=True)
    try:
        admin, olga = enrol(api, "admin"), enrol(api, "olga")
        url = f"http://127.0.0.1:{api.client.port}/console/"
        async with client() as a, client() as o:
            assert (await sign_in(a, url, "admin", admin.now())).status == 303
            assert (await sign_in(o, url, "olga", olga.now())).status == 303
            async with a.get(url + "officers") as resp:
                csrf = CSRF.search(await resp.text()).group(1)
            async with a.post(
                url + "officers", data={"csrf": csrf, "name": "erin", "role": "approver"}
            ) as resp:
                page = await resp.text()
                assert resp.status == 200 and 'id="setup-code"' in page
                assert "awaiting a second admin" in page
            async with a.post(
                url + "officers/alice/role",
                data={"csrf": csrf, "role": "admin", "reason": "new duties"},
            ) as resp:
                assert resp.status == 200
            # The requester cannot confirm their own requests.
            for name in ("erin", "alice"):
                async with a.post(url + f"officers/{name}/confirm", data={"csrf": csrf}) as resp:
                    assert resp.status == 403 and "must confirm" in await resp.text()
            _, listed = await api.call("admin", "GET", "/v1/officers")
            by_name = {x["name"]: x for x in listed["officers"]}
            assert not by_name["erin"]["active"] and by_name["alice"]["role"] == "officer"
            # Oversight, a second person, confirms both.
            async with o.get(url + "officers") as resp:
                ocsrf = CSRF.search(await resp.text()).group(1)
            for name in ("erin", "alice"):
                async with o.post(url + f"officers/{name}/confirm", data={"csrf": ocsrf}) as resp:
                    assert resp.status == 200, name
            _, listed = await api.call("admin", "GET", "/v1/officers")
            by_name = {x["name"]: x for x in listed["officers"]}
            assert by_name["erin"]["active"] and by_name["alice"]["role"] == "admin"
            # Oversight cannot create or deactivate.
            async with o.post(
                url + "officers/bob/deactivate", data={"csrf": ocsrf, "reason": "x"}
            ) as resp:
                assert resp.status == 403
    finally:
        await api.client.close()


async def test_delisting_in_the_console_takes_two_people(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, mount_console=True)
    try:
        _, entry = await api.call(
            "alice",
            "POST",
            "/v1/entries",
            {"value": "delist.example", "hosting_country": "NL", "evidence": "EV-D"},
        )
        await api.call("carol", "POST", f"/v1/entries/{entry['id']}/approve")
        bob, carol = enrol(api, "bob"), enrol(api, "carol")
        url = f"http://127.0.0.1:{api.client.port}/console/"
        page = url + f"entries/{entry['id']}"
        async with client() as b, client() as c:
            assert (await sign_in(b, url, "bob", bob.now())).status == 303
            assert (await sign_in(c, url, "carol", carol.now())).status == 303
            async with b.get(page) as resp:
                csrf = CSRF.search(await resp.text()).group(1)
            async with b.post(
                page + "/delist", data={"csrf": csrf, "reason": "gone at source"}
            ) as resp:
                text = await resp.text()
                assert resp.status == 200 and 'id="delist-request"' in text
                assert 'id="confirm-delist"' not in text  # not for the requester
            async with b.post(page + "/confirm-delist", data={"csrf": csrf}) as resp:
                assert resp.status == 403  # and refused by the store if forced
            _, still = await api.call("admin", "GET", f"/v1/entries/{entry['id']}")
            assert still["status"] == "active"
            async with c.get(url) as resp:
                assert f"/console/entries/{entry['id']}" in await resp.text()  # needs carol
            async with c.get(page) as resp:
                text = await resp.text()
                assert 'id="confirm-delist"' in text
                ccsrf = CSRF.search(text).group(1)
            async with c.post(page + "/confirm-delist", data={"csrf": ccsrf}) as resp:
                assert resp.status == 200
        _, after = await api.call("admin", "GET", f"/v1/entries/{entry['id']}")
        assert after["status"] == "delisted"
    finally:
        await api.client.close()
