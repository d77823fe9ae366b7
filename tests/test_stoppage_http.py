"""The stop page over real HTTP on loopback: notices, headers, languages, the form, bad input."""

from __future__ import annotations

import html
import io
import json
import logging
import re
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from test_stoppage_support import (
    DOMAIN_ID,
    FORM,
    HOST,
    URL_HOST,
    URL_ID,
    complaint_fields,
    fetch,
    fresh_token,
    make_config,
    running,
    status_of,
    submit,
    ticket_and_secret,
    wait_for,
    write_list,
)

from blocklist.logs import JsonFormatter
from stoppage.outbox import secret_hash

LANGS = ["fr", "en", "ar", "sw", "pt"]
MAX_PAGE = 15 * 1024


@pytest.fixture
async def stop(tmp_path: Path):
    root = write_list(tmp_path)
    config = make_config(tmp_path, root)
    async with running(config) as server:
        yield server


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def text_of(page: str) -> str:
    """Visible text, roughly: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# ---------------------------------------------------------------- notices


async def test_listed_host_gets_451_with_headers(stop, session) -> None:
    status, headers, body = await fetch(session, stop, "/some/page?x=1")
    assert status == 451
    assert headers["Link"] == '<https://authority.example/>; rel="blocked-by"'
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    for part in [
        "default-src 'none'",
        "style-src 'sha256-",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]:
        assert part in csp
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in headers
    assert "Set-Cookie" not in headers
    assert headers["Server"] == "stoppage"
    # No script, no external resource, no image: the page is complete on its own.
    assert "<script" not in body and "src=" not in body and "<img" not in body
    assert "<link" not in body and "@import" not in body and "url(" not in body
    text = text_of(body)
    assert HOST in text and "Autorité de test" in text and "Test Act, article 1." in text
    assert f"entrée {DOMAIN_ID}" in text  # French: the configured default language


async def test_inline_css_matches_the_csp_hash(stop, session) -> None:
    import base64
    import hashlib

    _, headers, body = await fetch(session, stop)
    css = re.search(r"<style>(.*?)</style>", body, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in headers["Content-Security-Policy"]
    assert "@media" not in css or "max-width" in css
    assert 'name="viewport" content="width=device-width,initial-scale=1"' in body


async def test_subdomains_are_blocked_and_other_hosts_get_the_neutral_page(stop, session) -> None:
    status, _, _ = await fetch(session, stop, host="www.cdn.blocked-demo.test:80")
    assert status == 451
    for host in ["allowed.example", "127.0.0.1", "[::1]", "", "demo.test"]:
        status, headers, body = await fetch(session, stop, "/anything", host=host)
        assert status == 200, host
        assert "Link" not in headers
        assert "Rien n’est bloqué ici" in html.unescape(body)


async def test_url_entries_block_only_their_paths(stop, session) -> None:
    status, _, body = await fetch(session, stop, "/album/42/img.jpg", host=URL_HOST)
    assert status == 451
    assert f"entrée {URL_ID}" in text_of(body)
    # The language links keep the path, so switching language still shows the notice...
    links = re.findall(r'<a href="([^"]+)" lang="(\w+)"', body)
    ar = dict((lang, href) for href, lang in links)["ar"]
    assert ar == "/album/42/img.jpg?lang=ar"
    status, _, body = await fetch(session, stop, html.unescape(ar), host=URL_HOST)
    assert status == 451 and 'dir="rtl"' in body
    # ... and the complaint form finds the entry through the path it is given.
    href = html.unescape(re.search(r'class="button" href="([^"]+)"', body).group(1))
    assert href.startswith("/complaint?path=%2Falbum%2F42%2Fimg.jpg")
    status, _, form = await fetch(session, stop, href, host=URL_HOST)
    assert status == 200 and 'name="token"' in form
    token = html.unescape(re.search(r'name="token" value="([^"]+)"', form).group(1))
    later = stop.tokens.clock
    stop.tokens.clock = lambda: time.time() + 10  # past the minimum fill time
    try:
        assert stop.tokens.verify(token, URL_HOST).entry_id == URL_ID
    finally:
        stop.tokens.clock = later
    status, _, _ = await fetch(session, stop, "/album/43/", host=URL_HOST)
    assert status == 200


async def test_head_robots_and_favicon(stop, session) -> None:
    status, headers, body = await fetch(session, stop, "/", method="HEAD")
    assert status == 451 and body == "" and int(headers["Content-Length"]) > 1000
    status, _, body = await fetch(session, stop, "/robots.txt")
    assert status == 200 and "Disallow: /" in body
    status, _, _ = await fetch(session, stop, "/favicon.ico")
    assert status == 404
    # Neither is a notice shown: only the HEAD above counts.
    assert sum(stop.counters.hours[max(stop.counters.hours)].values()) == 1


@pytest.mark.parametrize("lang", LANGS)
async def test_every_language_by_accept_language_and_small(stop, session, lang: str) -> None:
    status, headers, body = await fetch(
        session, stop, headers={"Accept-Language": f"de;q=0.9, {lang}-XX;q=0.8"}
    )
    assert status == 451
    assert headers["Content-Language"] == lang
    assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in body
    assert len(body.encode()) <= MAX_PAGE
    # Links to switch language, with each language named in itself.
    for code, name in [("fr", "Français"), ("ar", "العربية"), ("sw", "Kiswahili")]:
        assert f'href="?lang={code}" lang="{code}" hreflang="{code}"' in body
        assert name in body
    # Every other page is small too.
    for path, host in [("/", "allowed.example"), ("/complaint", HOST), ("/complaint/status", HOST)]:
        _, _, page = await fetch(session, stop, f"{path}?lang={lang}", host=host)
        assert f'lang="{lang}"' in page and len(page.encode()) <= MAX_PAGE, path


async def test_lang_parameter_beats_accept_language(stop, session) -> None:
    _, headers, body = await fetch(session, stop, "/?lang=sw", headers={"Accept-Language": "en"})
    assert headers["Content-Language"] == "sw" and "Ufikiaji wa anwani hii umezuiwa" in body
    _, headers, _ = await fetch(session, stop, "/?lang=zz", headers={"Accept-Language": "pt"})
    assert headers["Content-Language"] == "pt"


async def test_page_says_what_the_brief_requires(stop, session) -> None:
    _, _, body = await fetch(session, stop, "/?lang=en")
    text = " ".join(text_of(body).split())
    for needle in [
        "Access to this address has been blocked",
        "blocked-demo.test is on the list",
        "Test Authority",  # by whom
        "Legal basis",
        "Test Act, article 1.",  # under which law
        "criminal offence",
        "The police investigate",
        "confidential help",
        "Confidential help",  # the configured link
        "Test hotline",
        "Child helpline",
        "Contest this block",
        "Complaints are decided within 7 days.",
        "does not record your IP address",
    ]:
        assert needle in text, needle
    # Deterrence stays true under the no-logging policy: no claim that the visit was recorded.
    lowered = text.lower()
    for claim in ["has been recorded", "was recorded", "has been logged", "your ip address is"]:
        assert claim not in lowered
    assert 'href="https://help.example/"' in body and 'href="tel:116111"' in body


# ---------------------------------------------------------------- hostile input rendered inert


async def test_xss_in_host_path_and_query_is_inert(stop, session) -> None:
    evil = '"><script>alert(1)</script>'
    for host in [evil, f"{HOST}{evil}", "<svg onload=alert(1)>"]:
        status, _, body = await fetch(session, stop, "/", host=host)
        assert status == 200 and "<script>" not in body and "<svg" not in body
    raw_paths = [
        "/%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
        '/"><script>alert(1)</script>',
        "/?lang=%22%3E%3Cscript%3E",
    ]
    for path in raw_paths:
        status, _, body = await fetch(session, stop, path)
        assert status == 451 and "<script>" not in body and "alert(1)" not in body
    # A URL entry echoes its path into links: escaped, and kept on this site.
    status, _, body = await fetch(
        session, stop, '/album/42/"><script>alert(1)</script>', host=URL_HOST
    )
    assert status == 451 and "<script>" not in body
    status, _, body = await fetch(session, stop, "//evil.example/album/42/", host=URL_HOST)
    assert 'href="//' not in body


async def test_xss_in_form_fields_is_inert(stop, session) -> None:
    evil = '</textarea><script>alert(1)</script>"><b onmouseover=x>'
    fields = complaint_fields(stop, reason=evil, contact=evil, role=evil, language=evil)
    status, _, body = await submit(session, stop, fields)
    assert status == 422
    assert "<script>" not in body and "<b onmouseover" not in body
    assert "&lt;/textarea&gt;&lt;script&gt;" in body  # the person's text is kept, escaped


async def test_xss_in_decision_reasons_is_inert(stop, session) -> None:
    _, _, body = await submit(session, stop)
    ticket, secret = ticket_and_secret(body)
    con = sqlite3.connect(stop.config.complaints.outbox_path)
    con.execute(
        "UPDATE complaints SET state='forwarded', complaint_id='C-1', status='rejected',"
        " decided=?, decision_reasons=? WHERE ticket=?",
        (int(time.time()), "<script>alert(1)</script>\nline two", ticket),
    )
    con.commit()
    con.close()
    status, _, body = await fetch(
        session, stop, "/complaint/status", method="POST", data={"ticket": ticket, "secret": secret}
    )
    assert status == 200 and status_of(body) == "rejected"
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# ---------------------------------------------------------------- the complaint form


async def test_form_is_accessible_and_prefilled(stop, session) -> None:
    status, _, body = await fetch(session, stop, "/complaint?lang=en")
    assert status == 200
    assert "Contest the block of" in body and HOST in body
    for field in ["reason", "contact", "language"]:
        assert f'<label for="{field}">' in body and f'id="{field}"' in body
    assert "<fieldset" in body and "<legend>Who are you?</legend>" in body
    for role in ["site_owner", "hosting_provider", "visitor", "other"]:
        assert f'name="role" value="{role}"' in body
    # maxlength counts UTF-16 units: twice the limit, so 2,000 emoji still fit; the server
    # counts characters.
    assert 'maxlength="4000"' in body and 'type="file"' not in body
    assert 'class="hp" aria-hidden="true"' in body and 'tabindex="-1"' in body
    assert 'action="/complaint?lang=en"' in body and 'method="post"' in body
    assert '<option value="en" selected>' in body


async def test_form_for_a_host_that_is_not_blocked(stop, session) -> None:
    status, _, body = await fetch(session, stop, "/complaint?lang=en", host="allowed.example")
    assert status == 404 and "not blocked by this service" in body
    # Without a form shown for that host there is no valid token to send.
    status, _, body = await submit(session, stop, complaint_fields(stop), host="allowed.example")
    assert status == 400 and "could not be verified" in body
    # A form shown while the host was listed may still be sent after a delisting: the token
    # proves it was issued for a blocked host.
    fields = complaint_fields(stop, token=fresh_token(stop, host="allowed.example"))
    status, _, body = await submit(session, stop, fields, host="allowed.example")
    assert status == 200 and "has been received" in body


async def test_submit_stores_then_acknowledges_with_ticket_and_secret(stop, session) -> None:
    status, _, body = await submit(session, stop)
    assert status == 200 and "Your complaint has been received" in body
    ticket, secret = ticket_and_secret(body)
    assert re.fullmatch(r"T-[0-9A-Z]{4}-[0-9A-Z]{4}", ticket)
    assert re.fullmatch(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", secret)
    con = sqlite3.connect(stop.config.complaints.outbox_path)
    row = con.execute(
        "SELECT host, entry_id, role, reason, secret_hash FROM complaints WHERE ticket = ?",
        (ticket,),
    ).fetchone()
    assert row[:3] == (HOST, DOMAIN_ID, "site_owner") and "bakery" in row[3]
    # Only a hash of the secret is stored.
    assert row[4] == secret_hash(ticket, secret)
    dump = "\n".join(con.iterdump())
    assert secret not in dump and "127.0.0.1" not in dump
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    # Status, by POST and by GET, tolerant of case and spacing; wrong secrets are refused.
    for method, kwargs in [
        ("POST", {"data": {"ticket": ticket.lower(), "secret": secret.replace("-", " ")}}),
        ("GET", {"params": {"ticket": ticket, "secret": secret, "lang": "en"}}),
    ]:
        status, _, page = await fetch(session, stop, "/complaint/status", method=method, **kwargs)
        assert status == 200 and status_of(page) == "received", method
    status, _, page = await fetch(
        session,
        stop,
        "/complaint/status?lang=en",
        method="POST",
        data={"ticket": ticket, "secret": "AAAA-AAAA-AAAA-AAAA-AAAA"},
    )
    assert status == 404 and "No complaint matches this ticket and secret" in page
    status, _, page = await fetch(
        session, stop, "/complaint/status?lang=en", method="POST", data={"ticket": ticket}
    )
    assert status == 422 and "Please enter both the ticket and the secret" in page


async def test_forged_token(stop, session) -> None:
    for token in ["", "garbage", fresh_token(stop)[:-2] + "AA"]:
        status, _, body = await submit(session, stop, complaint_fields(stop, token=token))
        assert status == 400 and "This form could not be verified" in body
        assert 'href="/complaint?lang=en"' in body  # a way back to a fresh form
    # A genuine token for another host is no good here either.
    other = fresh_token(stop, host="www." + HOST)
    status, _, body = await submit(session, stop, complaint_fields(stop, token=other))
    assert status == 400 and "could not be verified" in body


async def test_expired_token_keeps_the_text_and_gives_a_fresh_form(stop, session) -> None:
    old = fresh_token(stop, age=3 * 3600)
    fields = complaint_fields(stop, token=old, reason="Kept across expiry")
    status, _, body = await submit(session, stop, fields)
    assert status == 400
    assert "This form stayed open too long (more than 2 hours)" in body
    assert "Kept across expiry</textarea>" in body
    token = html.unescape(re.search(r'name="token" value="([^"]+)"', body).group(1))
    assert token != old
    # The fresh token is subject to the minimum fill time like any other...
    status, _, body = await submit(session, stop, {**fields, "token": token})
    assert status == 400 and "sent too quickly" in body


async def test_too_fast(stop, session) -> None:
    _, _, form = await fetch(session, stop, "/complaint?lang=en")
    token = html.unescape(re.search(r'name="token" value="([^"]+)"', form).group(1))
    fields = complaint_fields(stop, token=token, reason="Typed by a robot")
    status, _, body = await submit(session, stop, fields)
    assert status == 400
    assert "The form was sent too quickly after it was opened" in body
    assert "Typed by a robot</textarea>" in body
    assert f'value="{html.escape(token)}"' in body or token in html.unescape(body)


async def test_honeypot(stop, session) -> None:
    fields = complaint_fields(stop, website="http://spam.example/")
    status, _, body = await submit(session, stop, fields)
    assert status == 400
    assert "A hidden field that must stay empty was filled in" in body
    assert 'name="website" tabindex="-1" autocomplete="off" value=""' in body
    assert stop.outbox.counts_sync()["pending"] == 0


@pytest.mark.parametrize(
    ("overrides", "message", "field"),
    [
        ({"role": ""}, "Please say who you are", "role"),
        ({"role": "police"}, "Please say who you are", "role"),
        ({"reason": "   "}, "Please explain why you think the block is wrong", "reason"),
        (
            {"reason": "x" * 2001},
            "Your explanation has 2001 characters; the limit is 2000",
            "reason",
        ),
        (
            {"contact": "c" * 201},
            "Your contact details have 201 characters; the limit is 200",
            "contact",
        ),
        ({"language": "tlh"}, "Please choose a language from the list", "language"),
    ],
)
async def test_invalid_fields_are_explained(stop, session, overrides, message, field) -> None:
    status, _, body = await submit(session, stop, complaint_fields(stop, **overrides))
    assert status == 422
    assert message in body and 'role="alert"' in body
    if field in ("reason", "contact"):
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', body)
    assert stop.outbox.counts_sync()["pending"] == 0


async def test_reason_of_exactly_2000_characters_with_crlf_is_accepted(stop, session) -> None:
    reason = ("a" * 998 + "\r\n") * 2  # 2000 characters once newlines are LF
    status, _, _ = await submit(session, stop, complaint_fields(stop, reason=reason))
    assert status == 200


@pytest.mark.parametrize("char", ["界", "😀", "é"])
async def test_a_reason_at_the_limit_in_any_script_is_stored(stop, session, char: str) -> None:
    # 2,000 characters of CJK (9 bytes each, URL-encoded) or emoji (12 bytes) fit the body limit.
    fields = complaint_fields(stop, reason=char * 2000, contact=char * 200)
    status, _, body = await submit(session, stop, fields)
    assert status == 200 and 'id="ticket"' in body


@pytest.mark.parametrize("char", ["界", "😀", "x"])
async def test_a_reason_over_the_limit_is_kept_with_a_count_in_characters(
    stop, session, char: str
) -> None:
    fields = complaint_fields(stop, reason=char * 2001)
    status, _, body = await submit(session, stop, fields)
    assert status == 422
    assert "Your explanation has 2001 characters; the limit is 2000" in html.unescape(body)
    assert char * 2001 in html.unescape(body)  # the text is still in the form


async def test_oversized_bodies_get_413(stop, session) -> None:
    limit_kb = stop.config.body_limit // 1024
    big = complaint_fields(stop, reason="x" * 50_000)
    status, _, body = await submit(session, stop, big)
    assert status == 413 and f"too large (the limit is {limit_kb} KB)" in html.unescape(body)

    async def chunks():
        yield b"token=x&reason="
        for _ in range(60):
            yield b"y" * 1024

    status, _, body = await submit(session, stop, chunks(), headers={"Content-Type": FORM})
    assert status == 413 and f"limit is {limit_kb} KB" in body
    status, _, body = await fetch(
        session,
        stop,
        "/complaint/status?lang=en",
        method="POST",
        data="ticket=" + "x" * 50_000,
        headers={"Content-Type": FORM},
    )
    assert status == 413


async def test_uploads_and_other_body_types_are_refused(stop, session) -> None:
    form = aiohttp.FormData()
    for key, value in complaint_fields(stop).items():
        form.add_field(key, value)
    form.add_field("file", io.BytesIO(b"GIF89a"), filename="x.gif", content_type="image/gif")
    status, _, body = await submit(session, stop, form)
    assert status == 415 and "only accepts text" in body
    status, _, body = await submit(
        session,
        stop,
        json.dumps(complaint_fields(stop)),
        headers={"Content-Type": "application/json"},
    )
    assert status == 415


async def test_same_form_twice_is_one_complaint(stop, session) -> None:
    fields = complaint_fields(stop)
    status, _, body = await submit(session, stop, fields)
    ticket, _ = ticket_and_secret(body)
    status, _, body = await submit(session, stop, fields)
    assert status == 409 and "This form has already been sent" in body and ticket in body
    assert stop.outbox.counts_sync()["pending"] == 1


# ---------------------------------------------------------------- rate limits


async def _from(address: str):
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_rate_limit_per_client(tmp_path: Path) -> None:
    config = make_config(tmp_path, write_list(tmp_path), limits={"per_client_per_hour": 2})
    async with running(config) as stop:
        async with await _from("127.0.0.2") as a, await _from("127.0.0.3") as b:
            for _ in range(2):
                assert (await submit(a, stop))[0] == 200
            status, headers, body = await submit(a, stop)
            assert status == 429 and "from your connection" in body
            assert 1 <= int(headers["Retry-After"]) <= 3601
            assert "bakery" in body  # the text is kept for later
            assert (await submit(b, stop))[0] == 200  # another client is not affected
        # Client addresses are rate-limit keys in memory, never stored.
        dump = "\n".join(sqlite3.connect(config.complaints.outbox_path).iterdump())
        assert "127.0.0.2" not in dump


async def test_rate_limit_per_entry_and_total(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, write_list(tmp_path), limits={"per_entry_per_hour": 2, "total_per_hour": 3}
    )
    async with running(config) as stop:
        sessions = [await _from(f"127.0.0.{i}") for i in range(10, 15)]
        try:
            assert (await submit(sessions[0], stop))[0] == 200
            assert (await submit(sessions[1], stop))[0] == 200
            status, _, body = await submit(sessions[2], stop)
            assert status == 429 and "Too many complaints about this address" in body
            url_fields = complaint_fields(stop, token=fresh_token(stop, URL_HOST, URL_ID))
            assert (await submit(sessions[3], stop, url_fields, host=URL_HOST))[0] == 200
            url_fields = complaint_fields(stop, token=fresh_token(stop, URL_HOST, URL_ID))
            status, _, body = await submit(sessions[4], stop, url_fields, host=URL_HOST)
            assert status == 429 and "receiving too many complaints" in body
        finally:
            for s in sessions:
                await s.close()


async def test_rate_limit_on_status_lookups(tmp_path: Path) -> None:
    config = make_config(tmp_path, write_list(tmp_path), limits={"status_per_client_per_minute": 3})
    async with running(config) as stop, aiohttp.ClientSession() as session:
        data = {"ticket": "T-0000-0000", "secret": "AAAA-AAAA-AAAA-AAAA-AAAA"}
        for _ in range(3):
            status, _, _ = await fetch(
                session, stop, "/complaint/status?lang=en", method="POST", data=data
            )
            assert status == 404
        status, headers, body = await fetch(
            session, stop, "/complaint/status?lang=en", method="POST", data=data
        )
        assert status == 429 and "Too many status requests" in body and headers["Retry-After"]


# ---------------------------------------------------------------- storage failure, privacy


async def test_storage_failure_never_says_received(stop, session) -> None:
    con = stop.outbox.conn
    stop.outbox._pool.submit(con.execute, "PRAGMA query_only = 1").result()
    try:
        status, _, body = await submit(session, stop, complaint_fields(stop, reason="Keep me"))
    finally:
        stop.outbox._pool.submit(con.execute, "PRAGMA query_only = 0").result()
    assert status == 503
    assert "it has NOT been received" in body and "received_heading" not in body
    assert "Your complaint has been received" not in body
    assert "Keep me</textarea>" in body


async def test_complaints_disabled(tmp_path: Path) -> None:
    config = make_config(tmp_path, write_list(tmp_path), complaints={"enabled": False})
    async with running(config) as stop, aiohttp.ClientSession() as session:
        status, _, body = await fetch(session, stop, "/?lang=en")
        assert status == 451 and "please contact" in body and "/complaint?" not in body
        status, _, body = await fetch(session, stop, "/complaint?lang=en")
        assert status == 404 and "To contest this block, please contact" in body


async def test_no_log_line_names_a_client_a_path_or_a_browser(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        config = make_config(tmp_path, write_list(tmp_path))
        async with running(config) as stop, await _from("127.0.0.7") as session:
            ua = {"User-Agent": "SecretBrowser/9.9"}
            await fetch(session, stop, "/private/path-one", headers=ua)
            await fetch(session, stop, "/private/path-two", host="allowed.example", headers=ua)
            await submit(session, stop, headers=ua)
            await submit(session, stop, complaint_fields(stop, token="bad"), headers=ua)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = stream.getvalue()
    assert "list in force" in logged  # logging works, it just never names visitors
    for secret in ["127.0.0.7", "/private/path", "SecretBrowser", "bakery"]:
        assert secret not in logged


async def test_hourly_counters_and_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path, write_list(tmp_path), metrics={"persist_counters": True})
    async with running(config) as stop, aiohttp.ClientSession() as session:
        for _ in range(3):
            await fetch(session, stop, "/x")
        await fetch(session, stop, "/album/42/", host=URL_HOST)
        await fetch(session, stop, "/", host="allowed.example")
        host, port = stop.metrics_address
        async with session.get(f"http://{host}:{port}/counters") as resp:
            hours = (await resp.json())["hours"]
        assert list(hours.values()) == [{str(DOMAIN_ID): 3, str(URL_ID): 1}]
        async with session.get(f"http://{host}:{port}/metrics") as resp:
            metrics = await resp.text()
        assert f'cordon_stoppage_blocked_total{{entry="{DOMAIN_ID}"}} 3.0' in metrics
        assert 'cordon_stoppage_pages_total{page="neutral"} 1.0' in metrics
        assert "cordon_stoppage_list_serial 1.0" in metrics
        async with session.get(f"http://{host}:{port}/health") as resp:
            assert resp.status == 200 and (await resp.json())["list"]["entries"] == 2
    saved = json.loads((tmp_path / "stoppage-state" / "counters.json").read_text())
    assert list(saved["hours"].values()) == [{str(DOMAIN_ID): 3, str(URL_ID): 1}]
    assert set(saved) == {"version", "hours"}


async def test_a_new_list_is_picked_up_without_restart(tmp_path: Path) -> None:
    from blocklist.state import Kind
    from blocklist.sync.local import LocalSigner

    signer = LocalSigner.generate(int(time.time()))
    config = make_config(tmp_path, write_list(tmp_path, signer=signer))
    async with running(config) as stop, aiohttp.ClientSession() as session:
        assert (await fetch(session, stop))[0] == 451
        # A list signed by another root is refused (the watcher says so): the one in force stays.
        write_list(tmp_path, [("other-demo.test", 5, Kind.DOMAIN)], serial=2)
        await wait_for(lambda: stop.watcher.refused == 1)
        assert (await fetch(session, stop))[0] == 451
        assert (await fetch(session, stop, host="other-demo.test"))[0] == 200
        # A newer list from the pinned root is taken by the same running server.
        write_list(tmp_path, [("other-demo.test", 5, Kind.DOMAIN)], serial=3, signer=signer)
        await wait_for(lambda: stop.service.matcher.serial == 3)
        assert (await fetch(session, stop))[0] == 200
        assert (await fetch(session, stop, host="other-demo.test"))[0] == 451
