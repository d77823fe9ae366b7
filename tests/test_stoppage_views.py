"""The stop page's views and rendering without a server: pure functions of host, path, language
and list; pre-rendered pages filled per request; wording and fallbacks in every language."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from test_stoppage_support import (
    DOMAIN_ID,
    ENTRIES,
    HOST,
    URL_HOST,
    URL_ID,
    complaint_fields,
    fetch,
    make_config,
    running,
    submit,
    write_list,
)

from blocklist.sync import verified as persist
from signing import parse_public_key
from stoppage import views
from stoppage.app import StopPage
from stoppage.counters import HourlyCounters
from stoppage.i18n import SHIPPED_DIR
from stoppage.matching import Matcher
from stoppage.pages import Prerendered, missing_texts, slot

LANGS = ["fr", "en", "ar", "sw", "pt"]


@pytest.fixture
def matcher(tmp_path: Path) -> Matcher:
    root = write_list(tmp_path)
    config = make_config(tmp_path, root)
    return Matcher(persist.load(config.sync.state_dir, config.sync.pinned_roots, 100))


@pytest.fixture
def service(tmp_path: Path) -> StopPage:
    root = write_list(tmp_path)
    config = make_config(tmp_path, root)
    stop = StopPage(config)
    stop.set_list(persist.load(config.sync.state_dir, config.sync.pinned_roots, 100))
    return stop


# ---------------------------------------------------------------- views


def test_notice_view_for_listed_unlisted_and_url_addresses(matcher: Matcher) -> None:
    v = views.notice(HOST, "/any/page?x=1", "fr", matcher)
    assert (v.status, v.kind, v.entry_id) == (451, "blocked", DOMAIN_ID)
    assert v.values == {"host": HOST, "entry": str(DOMAIN_ID)}
    v = views.notice(f"www.{HOST}", "/", "ar", matcher)
    assert (v.status, v.kind, v.lang) == (451, "blocked", "ar")
    v = views.notice(URL_HOST, "/album/42/photo.jpg?lang=en", "en", matcher)
    assert (v.status, v.kind, v.entry_id) == (451, "blocked_url", URL_ID)
    # The language link appends to the path without the lang= it came with.
    assert v.values["switch_base"] == "/album/42/photo.jpg?"
    assert v.values["complaint_href"] == "/complaint?path=%2Falbum%2F42%2Fphoto.jpg&lang=en"
    assert views.notice(URL_HOST, "//evil.example/album/42/", "en", matcher).status == 200
    v = views.notice(URL_HOST, "/album/42/a?b=c", "en", matcher)
    assert v.values["switch_base"] == "/album/42/a?b=c&"
    for host in ["allowed.example", None]:
        v = views.notice(host, "/", "sw", matcher)
        assert (v.status, v.kind, v.entry_id) == (200, "neutral", None)


def test_complaint_form_view(matcher: Matcher) -> None:
    v = views.complaint_form(HOST, "/", "en", matcher)
    assert (v.status, v.kind, v.entry_id, v.values["switch_base"]) == (200, "form", DOMAIN_ID, "?")
    v = views.complaint_form(URL_HOST, "/album/42/x", "en", matcher)
    assert v.entry_id == URL_ID and v.values["switch_base"] == "?path=%2Falbum%2F42%2Fx&"
    assert views.complaint_form("allowed.example", "/", "en", matcher).kind == "not_blocked"
    assert views.complaint_form(None, "/", "en", matcher).status == 404


def test_check_complaint_counts_characters_not_bytes() -> None:
    ok = {"role": "visitor", "reason": "😀" * 2000, "contact": "界" * 200, "language": "ar"}
    assert views.check_complaint(ok, LANGS, 2000, 200) == []
    bad = {"role": "x", "reason": "😀" * 2001, "contact": "界" * 201, "language": "de"}
    problems = views.check_complaint(bad, LANGS, 2000, 200)
    assert [(p.key, p.field) for p in problems] == [
        ("err_role", "role"),
        ("err_reason_long", "reason"),
        ("err_contact_long", "contact"),
        ("err_language", "language"),
    ]
    assert dict(problems[1].values) == {"count": 2001, "max": 2000}
    empty = dict(ok, reason="")
    assert [p.key for p in views.check_complaint(empty, LANGS, 2000, 200)] == ["err_reason_empty"]


def test_status_and_language_choice() -> None:
    row = {"state": "forwarded", "status": "upheld"}
    assert views.status_of(row) == ("upheld", "status_upheld")
    assert views.status_of({"state": "pending", "status": "received"})[0] == "received"
    assert views.status_of({"state": "undeliverable", "status": "x"})[0] == "undeliverable"
    assert views.status_of({"state": "forwarded", "status": "received"})[0] == "forwarded"
    assert views.choose_language("ar", "fr", LANGS, "fr") == "ar"
    assert views.choose_language("de", "sw;q=0.5, pt-BR;q=0.9", LANGS, "fr") == "pt"
    assert views.choose_language(None, "de", LANGS, "fr") == "fr"


# ---------------------------------------------------------------- pre-rendered pages


def test_prerendered_fill_escapes_every_value() -> None:
    page = Prerendered.split(f'<a href="{slot("href")}">{slot("host")}</a>')
    assert page.slots == ("href", "host")
    out = page.fill({"href": '/x?a=1&b="2"', "host": "<b>a.test</b>"}).decode()
    assert out == '<a href="/x?a=1&amp;b=&#34;2&#34;"><b>a.test</b></a>'.replace(
        "<b>a.test</b>", "&lt;b&gt;a.test&lt;/b&gt;"
    )


@pytest.mark.parametrize("lang", LANGS)
def test_prerendered_pages_equal_a_full_render(service: StopPage, lang: str) -> None:
    """The fragments joined per request give exactly what Jinja renders with the values."""
    from markupsafe import Markup

    host = "évil<script>.test"
    filled = service.renderer.fill("blocked", lang, {"host": host, "entry": str(DOMAIN_ID)})
    full = service.render(
        "blocked.html",
        lang,
        host=Markup('<bdi dir="ltr">{}</bdi>').format(host),
        is_url=False,
        entry_id=str(DOMAIN_ID),
        serial=1,
        switch_base="?",
        complaint_href=f"/complaint?lang={lang}",
    )
    assert filled == full
    assert b"<script>" not in filled and "évil&lt;script&gt;.test".encode() in filled


def test_pages_are_rendered_once_per_language_and_list(service: StopPage, tmp_path: Path) -> None:
    for i in range(50):
        service.renderer.fill("blocked", "fr", {"host": f"h{i}.{HOST}", "entry": "1"})
    assert list(service.renderer._pages) == [("blocked", "fr")]
    first = service.renderer.prerendered("blocked", "fr")
    assert service.renderer.prerendered("blocked", "fr") is first
    # A new list (new serial in the reference line) renders again.
    root = write_list(tmp_path, ENTRIES, serial=2)
    cfg = service.config
    service.set_list(persist.load(cfg.sync.state_dir, [parse_public_key(root)], 100))
    again = service.renderer.fill("blocked", "fr", {"host": HOST, "entry": "1"})
    assert service.renderer.prerendered("blocked", "fr") is not first
    assert b"version de la liste 2" in again


# ---------------------------------------------------------------- counters


def test_hourly_counters_are_bounded_with_an_other_bucket() -> None:
    counters = HourlyCounters(keep_hours=2, max_entries=3)
    now = 7200.0 * 1000
    for entry in [1, 2, 3, 4, 5, 1, 4]:
        counters.hit(entry, now)
    snap = json.loads(b"".join(counters.chunks(now)))
    assert snap["hours"] == {str(int(now)): {"1": 2, "2": 1, "3": 1, "other": 3}}
    for i in range(100_000):
        counters.hit(1000 + i, now + 3600)
    assert sum(len(c) for c in counters.hours.values()) <= 2 * 3
    counters.hit(1, now + 2 * 3600)  # the hour before last drops out
    assert sorted(counters.hours) == [int(now) + 3600, int(now) + 7200]


def test_finished_hours_are_serialised_once() -> None:
    counters = HourlyCounters(keep_hours=48, max_entries=10)
    counters.hit(1, 3600.0)
    first = list(counters.chunks(now=7300.0))
    counters.hours[3600][1] = 99  # a finished hour never changes; its JSON is kept
    assert list(counters.chunks(now=7300.0)) == first


# ---------------------------------------------------------------- languages and wording


def _messages(lang: str) -> dict:
    data = json.loads((SHIPPED_DIR / f"{lang}.json").read_text())
    data.pop("_meta")
    return data


@pytest.mark.parametrize("lang", LANGS)
def test_names_only_in_apposition_or_after_a_label(lang: str) -> None:
    """{authority} and {operator} never take an article, a gender or a case from the sentence:
    each follows a generic noun in parentheses ("the competent authority ({authority})") or a
    label ("…: {authority}"), so any name keeps every language grammatical."""
    for key, message in _messages(lang).items():
        texts = message.values() if isinstance(message, dict) else [message]
        for text in texts:
            for name in ("authority", "operator"):
                for m in re.finditer("{" + name + "}", text):
                    before, after = text[: m.start()], text[m.end() :]
                    in_parens = before.endswith("(") and after.startswith(")")
                    labelled = before.rstrip().endswith(":") and after == ""
                    assert in_parens or labelled, (lang, key, text)


@pytest.mark.parametrize("lang", ["ar", "sw", "pt"])
def test_untranslated_config_texts_fall_back_to_english_marked(tmp_path: Path, lang: str) -> None:
    root = write_list(tmp_path)
    config = make_config(
        tmp_path,
        root,
        authority={
            "name": {"fr": "Autorité de test", "en": "Test Authority"},
            "legal_basis": {"fr": "Loi de test", "en": "Test Act"},
        },
        page={"default_language": "fr"},
    )
    stop = StopPage(config)
    body = stop.renderer.fill("blocked", lang, {"host": HOST, "entry": "1"}).decode()
    assert '<bdi lang="en">Test Authority</bdi>' in body
    assert '<span lang="en">Test Act</span>' in body
    assert "Autorité de test" not in body
    fr = stop.renderer.fill("blocked", "fr", {"host": HOST, "entry": "1"}).decode()
    assert "<bdi>Autorité de test</bdi>" in fr and 'lang="en"' not in fr.split("<main>")[1]
    warned = {(lng, key) for lng, key, _ in missing_texts(config)}
    assert (lang, "authority.legal_basis") in warned and ("fr", "authority.name") not in warned


def test_stoppage_check_warns_per_language(tmp_path: Path, capsys) -> None:
    from stoppage.cli import main

    root = write_list(tmp_path)
    path = tmp_path / "stoppage.toml"
    path.write_text(
        f'[sync]\nroot_keys = ["{root}"]\nstate_dir = "sync-state"\n'
        '[authority]\nwebsite = "https://authority.example/"\n'
        'legal_basis = { fr = "Loi", en = "Act" }\n'
        '[page]\nhotline = { name = "H", url = "https://hotline.example/" }\n'
        'confidential_help = [{ name = "C", url = "https://help.example/" }]\n'
        "[server]\nmax_body_bytes = 16384\n"
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for lang in ["ar", "sw", "pt"]:
        assert (
            f"warning: page {lang}: authority.legal_basis has no '{lang}' text; shown in 'en'"
        ) in out
    assert "warning: page fr: authority.legal_basis" not in out
    assert "server.max_body_bytes = 16384 is below" in out
    assert (
        "complaint status address (shown with each ticket): http://127.0.0.1/complaint/status"
        in out
    )


# ---------------------------------------------------------------- over HTTP


async def test_stable_status_address_on_the_received_page(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        write_list(tmp_path),
        page={"status_url": "http://stoppage.isp.example/complaint/status"},
    )
    async with running(config) as stop, aiohttp.ClientSession() as session:
        status, _, body = await submit(session, stop, lang="ar")
        assert status == 200
        ticket = re.search(r'id="ticket" dir="ltr">([^<]+)<', body).group(1)
        link = f"http://stoppage.isp.example/complaint/status?ticket={ticket}&amp;lang=ar"
        assert f'id="follow" href="{link}"' in body
        # The address names the stop page, which answers it for any Host, listed or not.
        status, _, body = await fetch(
            session, stop, f"/complaint/status?ticket={ticket}", host="stoppage.isp.example"
        )
        assert status == 200 and f'value="{ticket}"' in body


async def test_rate_limit_keys_on_the_forwarded_address_behind_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    limits = {"per_client_per_hour": 1, "per_entry_per_hour": 100, "total_per_hour": 100}
    for trusted in ([], ["127.0.0.1"]):
        base = tmp_path / ("trusted" if trusted else "direct")
        base.mkdir()
        config = make_config(
            base, write_list(base), limits=limits, server={"trusted_proxies": trusted}
        )
        async with running(config) as stop, aiohttp.ClientSession() as session:
            codes = []
            for client in ["198.51.100.1", "198.51.100.2", "198.51.100.2"]:
                status, _, _ = await submit(
                    session,
                    stop,
                    complaint_fields(stop),
                    headers={"X-Forwarded-For": f"203.0.113.9, {client}"},
                )
                codes.append(status)
        # Direct: one client (the proxy's address), so the second complaint is limited. Behind
        # a trusted proxy: two clients, and the second one's repeat is limited.
        assert codes == ([200, 429, 429] if not trusted else [200, 200, 429])
