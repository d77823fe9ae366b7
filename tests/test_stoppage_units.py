"""Stop page building blocks: configuration, catalogues, language choice, matching, tokens."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from babel import Locale
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stoppage_support import DOMAIN_ID, ENTRIES, HOST, URL_ID, config_data, make_config

from blocklist.config import ConfigError, load_config, validate_config
from blocklist.state import Kind
from blocklist.sync import verified as persist
from signing import parse_public_key
from stoppage.app import StopPage, same_site_path, strip_lang_param
from stoppage.config import StoppageConfig, localize, localize_lang
from stoppage.demo import write_signed_list
from stoppage.forwarder import backoff
from stoppage.i18n import (
    SHIPPED_DIR,
    Translator,
    load_catalogues,
    negotiate,
    parse_accept_language,
)
from stoppage.limits import WindowLimit
from stoppage.matching import Matcher, canonical_host
from stoppage.outbox import normalize_secret, normalize_ticket
from stoppage.tokens import FormTokens, TokenError, TokenProblem, load_or_create_secret

ROOT_DIR = Path(__file__).resolve().parent.parent
ROOT = "ed25519:" + "A" * 43 + "="


# ---------------------------------------------------------------- configuration


def test_example_config_loads_and_renders_every_language() -> None:
    path = ROOT_DIR / "deploy" / "stoppage.toml"
    config = load_config(path, StoppageConfig)
    assert config.page.languages == ["fr", "en", "ar", "sw", "pt"]
    assert config.sync.state_dir.is_absolute()
    service = StopPage(config, source=str(path))
    for lang in config.page.languages:
        body = service.render(
            "blocked.html",
            lang,
            host=HOST,
            is_url=False,
            entry_id=1,
            serial=1,
            complaint_href="/complaint",
        ).decode()
        assert f'lang="{lang}"' in body and "Example ISP" in body


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"page": {"languages": ["fr", "xx"]}}, "page.languages: no catalogue for 'xx'"),
        ({"page": {"languages": ["FR"]}}, "page.languages"),
        ({"page": {"default_language": "de"}}, "page"),
        ({"page": {"hotline": {"name": "x", "url": "javascript:alert(1)"}}}, "page.hotline.url"),
        ({"authority": {"website": "ftp://x.example/"}}, "authority.website"),
        ({"authority": {"legal_basis": {"EN": "x"}}}, "authority.legal_basis"),
        ({"metrics": {"listen": "192.0.2.1"}}, "metrics.listen"),
        ({"server": {"listen": ["not-an-address"]}}, "server.listen"),
        ({"limits": {"per_client_per_hour": 0}}, "limits.per_client_per_hour"),
        ({"complaints": {"max_reason_chars": 5000}}, "complaints.max_reason_chars"),
        ({"complaints": {"typo_key": 1}}, "complaints.typo_key: unknown key"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, change: dict, where: str) -> None:
    data = config_data(ROOT, **change)
    with pytest.raises(ConfigError) as info:
        config = validate_config(data, StoppageConfig, "stoppage.toml", tmp_path)
        StopPage(config, source="stoppage.toml")  # catalogues are checked when loaded
    assert "stoppage.toml" in str(info.value)
    assert where in str(info.value)


def test_missing_config_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml", StoppageConfig)
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad, StoppageConfig)


def test_localized_texts_fall_back() -> None:
    value = {"fr": "bonjour", "en": "hello"}
    assert localize(value, "fr") == "bonjour"
    assert localize(value, "fr-ca") == "bonjour"
    assert localize(value, "ar", "fr") == "hello"  # English before the default language
    assert localize({"fr": "bonjour", "pt": "olá"}, "sw", "pt") == "olá"
    assert localize({"fr": "bonjour", "pt": "olá"}, "sw") == "bonjour"  # else the first one
    assert localize("same everywhere", "ar") == "same everywhere"
    assert localize_lang(value, "ar", "fr") == ("hello", "en")
    assert localize_lang("same everywhere", "ar") == ("same everywhere", "")


# ---------------------------------------------------------------- catalogues and languages


def test_shipped_catalogues_are_complete_and_consistent() -> None:
    reference = json.loads((SHIPPED_DIR / "en.json").read_text())
    for path in SHIPPED_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) == set(reference), path.name
        lang = path.stem
        categories = set(Locale.parse(lang).plural_form.tags) | {"other"}
        for key, text in data.items():
            if key == "_meta":
                continue
            placeholders = {p for p in _placeholders(text)}
            assert placeholders == _placeholders(reference[key]), (path.name, key)
            # A message stating a number has a form for every CLDR category of the language.
            assert isinstance(text, dict) == isinstance(reference[key], dict), (path.name, key)
            if isinstance(text, dict):
                assert set(text) == categories, (path.name, key)
    cats = load_catalogues(["fr", "en", "ar", "sw", "pt"])
    assert cats["ar"].direction == "rtl"
    assert {c.direction for k, c in cats.items() if k != "ar"} == {"ltr"}


def _placeholders(text: str | dict[str, str]) -> set[str]:
    import string

    texts = text.values() if isinstance(text, dict) else [text]
    return {name for t in texts for _, name, _, _ in string.Formatter().parse(t) if name}


@pytest.mark.parametrize(
    ("lang", "count", "expected"),
    [
        ("en", 1, "in 1 minute."),
        ("en", 5, "in 5 minutes."),
        ("fr", 1, "dans 1 minute."),
        ("fr", 2, "dans 2 minutes."),
        ("pt", 1, "dentro de 1 minuto."),
        ("pt", 7, "dentro de 7 minutos."),
        ("sw", 1, "dakika 1."),
        ("ar", 1, "بعد دقيقة واحدة."),
        ("ar", 2, "بعد دقيقتين."),
        ("ar", 3, "بعد 3 دقائق."),
        ("ar", 11, "بعد 11 دقيقة."),
        ("ar", 100, "بعد 100 دقيقة."),
    ],
)
def test_plurals_follow_cldr(lang: str, count: int, expected: str) -> None:
    cats = load_catalogues([lang, "en"])
    tr = Translator(cats[lang], [cats["en"]])
    assert str(tr("err_rate_client", count=count)).endswith(expected)


def test_deployment_adds_a_language_and_overrides_a_message(tmp_path: Path) -> None:
    extra = tmp_path / "locales"
    extra.mkdir()
    (extra / "es.json").write_text(
        json.dumps(
            {
                "_meta": {"name": "Español", "dir": "ltr"},
                "blocked_heading": "Se ha bloqueado el acceso a esta dirección",
            }
        )
    )
    (extra / "en.json").write_text(json.dumps({"privacy_text": "Custom privacy sentence."}))
    config = make_config(
        tmp_path, ROOT, page={"languages": ["fr", "en", "es"], "locales_dir": "locales"}
    )
    service = StopPage(config)
    es = service.render(
        "blocked.html", "es", host=HOST, is_url=False, entry_id=1, serial=1, complaint_href="/"
    ).decode()
    assert "Se ha bloqueado el acceso" in es and 'lang="es"' in es
    # Messages the new catalogue lacks come from English, marked so screen readers switch voice.
    assert '<span lang="en">Why you see this page</span>' in es
    assert "blocked_heading" not in service.translators["es"].missing()
    assert "why_heading" in service.translators["es"].missing()
    en = service.render(
        "blocked.html", "en", host=HOST, is_url=False, entry_id=1, serial=1, complaint_href="/"
    ).decode()
    assert "Custom privacy sentence." in en


def test_bad_catalogues_are_refused_with_file_and_key(tmp_path: Path) -> None:
    extra = tmp_path / "locales"
    extra.mkdir()
    (extra / "de.json").write_text(json.dumps({"blocked_heading": "x"}))
    with pytest.raises(ConfigError, match=r"de.json: _meta.name"):
        load_catalogues(["de"], extra)
    (extra / "de.json").write_text(json.dumps({"_meta": {"name": "Deutsch"}, "nope": "x"}))
    with pytest.raises(ConfigError, match=r"de.json: nope: unknown message key"):
        load_catalogues(["de"], extra)
    (extra / "de.json").write_text(json.dumps({"_meta": {"name": "Deutsch"}, "reference": "{"}))
    with pytest.raises(ConfigError, match=r"de.json: reference: bad placeholder"):
        load_catalogues(["de"], extra)
    (extra / "de.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"de.json: not a readable JSON catalogue"):
        load_catalogues(["de"], extra)


def test_catalogue_text_cannot_inject_markup(tmp_path: Path) -> None:
    extra = tmp_path / "locales"
    extra.mkdir()
    (extra / "en.json").write_text(json.dumps({"blocked_heading": "<script>alert(1)</script>"}))
    config = make_config(tmp_path, ROOT, page={"locales_dir": "locales"})
    body = StopPage(config).render(
        "blocked.html", "en", host=HOST, is_url=False, entry_id=1, serial=1, complaint_href="/"
    )
    assert b"<script>" not in body and b"&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "fr"),
        ("en", "en"),
        ("en-GB,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,ar;q=0.8,en;q=0.7", "ar"),
        ("pt-BR", "pt"),
        ("sw;q=0.2, en;q=0.5", "en"),
        ("en;q=0, sw", "sw"),
        ("*", "fr"),
        ("de, *;q=0.1", "fr"),
        ("xx;q=abc, pt;q=0.3", "pt"),
        ("en;q=2", "fr"),  # an out-of-range q-value counts as 0
        ("zh-Hant-TW", "fr"),
    ],
)
def test_accept_language_negotiation(header: str, expected: str) -> None:
    assert negotiate(header, ["fr", "en", "ar", "sw", "pt"], "fr") == expected


def test_accept_language_parse_keeps_order_among_equal_q() -> None:
    assert parse_accept_language("sw, pt;q=0.8, ar, en;q=0.8") == ["sw", "ar", "pt", "en"]


# ---------------------------------------------------------------- matching


def test_canonical_host_from_host_header() -> None:
    assert canonical_host("Blocked-Demo.TEST") == HOST
    assert canonical_host("blocked-demo.test:8080") == HOST
    assert canonical_host("blocked-demo.test.") == HOST
    assert canonical_host("xn--bcher-demo-9db.test") == "xn--bcher-demo-9db.test"
    assert canonical_host("bücher-demo.test") == "xn--bcher-demo-9db.test"
    for bad in ["", "127.0.0.1", "[::1]:80", "192.0.2.1:80", "a b.test", "<script>", "x:y:z"]:
        assert canonical_host(bad) is None, bad


def test_matcher_domains_parents_and_urls(tmp_path: Path) -> None:
    root = write_signed_list(tmp_path, ENTRIES)
    verified = persist.load(tmp_path, [parse_public_key(root)], 1000)
    m = Matcher(verified)
    assert m.lookup(HOST).entry_id == DOMAIN_ID
    assert m.lookup("www.cdn." + HOST).entry_id == DOMAIN_ID
    assert m.lookup("demo.test") is None and m.lookup("other.example") is None
    assert m.lookup("shared-host.example", "/") is None
    hit = m.lookup("shared-host.example", "/album/42/photo.jpg?size=big")
    assert hit is not None and (hit.entry_id, hit.kind) == (URL_ID, Kind.URL)
    assert m.lookup("www.shared-host.example", "/album/42/").entry_id == URL_ID
    assert m.lookup("shared-host.example", "/album/43/") is None
    assert m.lookup("shared-host.example", "/%61lbum/42/").entry_id == URL_ID  # %61 = a
    assert m.lookup(None) is None
    assert Matcher(None).lookup(HOST) is None


def test_language_links_keep_url_entries_matching() -> None:
    assert strip_lang_param("/album/42/?lang=ar") == "/album/42/"
    assert strip_lang_param("/a?x=1&lang=sw") == "/a?x=1"
    assert strip_lang_param("/a?x=1") == "/a?x=1"
    assert same_site_path("//evil.example/x") == "/evil.example/x"
    assert same_site_path("/\\evil.example") == "/evil.example"
    assert same_site_path("/a\\b") == "/a%5Cb"


# ---------------------------------------------------------------- form tokens


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_form_tokens() -> None:
    clock = Clock()
    tokens = FormTokens(b"k" * 32, max_age=7200, min_fill=3, clock=clock)
    token = tokens.issue(HOST, 7)
    with pytest.raises(TokenError) as info:
        tokens.verify(token, HOST)
    assert info.value.problem is TokenProblem.TOO_FAST
    clock.now += 3
    parsed = tokens.verify(token, HOST)
    assert (parsed.host, parsed.entry_id) == (HOST, 7) and len(parsed.nonce) == 22
    assert tokens.issue(HOST, 7) != token  # a fresh nonce each time
    clock.now += 7200
    with pytest.raises(TokenError) as info:
        tokens.verify(token, HOST)
    assert info.value.problem is TokenProblem.EXPIRED and info.value.token.entry_id == 7
    clock.now -= 7200
    # Another host, another key, a flipped bit, junk: all forged.
    other = FormTokens(b"x" * 32, max_age=7200, min_fill=3, clock=clock)
    body, mac = token.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac
    for bad, host in [
        (token, "other.example"),
        (token, None),
        (other.issue(HOST, 7, issued=int(clock.now) - 10), HOST),
        (flipped, HOST),
        ("", HOST),
        ("a.b.c", HOST),
        ("%%%.***", HOST),
        ("x" * 700, HOST),
    ]:
        with pytest.raises(TokenError) as info:
            tokens.verify(bad, host)
        assert info.value.problem is TokenProblem.FORGED, bad
    assert tokens.verify(tokens.issue(HOST, None, issued=int(clock.now) - 5), HOST).entry_id is None


def test_secret_file_is_created_0600_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "form-secret"
    first = load_or_create_secret(path)
    assert len(first) == 32 and (os.stat(path).st_mode & 0o777) == 0o600
    assert load_or_create_secret(path) == first
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600"):
        load_or_create_secret(path)


# ---------------------------------------------------------------- limits, backoff, tickets


def test_window_limit_is_bounded_and_rolls() -> None:
    now = [0.0]
    limit = WindowLimit(2, 60, max_keys=100, clock=lambda: now[0])
    assert limit.allowed("a")
    limit.hit("a")
    limit.hit("a")
    assert not limit.allowed("a") and limit.allowed("b")
    assert 1 <= limit.retry_after() <= 61
    for i in range(500):
        limit.hit(f"client-{i}")
    assert len(limit) <= 101  # beyond max_keys, new keys share one counter
    now[0] = 61
    assert limit.allowed("a") and len(limit) == 0


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1).random
    delays = [backoff(n, 5, 3600, rng) for n in range(20)]
    assert all(2.5 <= d <= 5 for d in delays[:1])
    assert all(1800 <= d <= 3600 for d in delays[12:])
    assert len(set(delays)) == len(delays)
    assert backoff(1000, 1, 60) <= 60


def test_ticket_and_secret_input_is_forgiving() -> None:
    assert normalize_ticket(" t-ab0c-d1e2 ") == "T-AB0C-D1E2"
    assert normalize_ticket("ABOC D1E2") == "T-AB0C-D1E2"  # O read as 0
    assert normalize_ticket("T-ABC") == ""
    assert normalize_secret("abcd efgh jkmn pqrs tvwx") == "ABCD-EFGH-JKMN-PQRS-TVWX"
    assert normalize_secret("abcd-efgh-ijkl-mnop-qrst") == "ABCD-EFGH-1JK1-MN0P-QRST"
    assert normalize_secret("short") == ""


# ---------------------------------------------------------------- metrics and the CLI


def test_entry_labels_are_capped() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stoppage.counters import StopPageMetrics

    registry = CollectorRegistry()
    metrics = StopPageMetrics(registry, max_entry_labels=2)
    for entry in [1, 2, 3, 4, 1]:
        metrics.blocked_hit(entry)
    text = generate_latest(registry).decode()
    assert 'cordon_stoppage_blocked_total{entry="1"} 2.0' in text
    assert 'cordon_stoppage_blocked_total{entry="other"} 2.0' in text
    assert 'entry="3"' not in text


def test_cli_check_and_outbox(tmp_path: Path, capsys) -> None:
    from stoppage.cli import main

    assert main(["check", "--config", str(ROOT_DIR / "deploy" / "stoppage.toml")]) == 0
    out = capsys.readouterr().out
    assert '"ipv4": "192.0.2.80"' in out and '"[2001:db8::80]:80"' in out
    for lang in ["fr", "en", "ar", "sw", "pt"]:
        assert f"page {lang}: blocked notice" in out
    assert "verified list: none yet" in out

    root = write_signed_list(tmp_path / "sync-state", ENTRIES)
    config = tmp_path / "stoppage.toml"
    config.write_text(
        f'[sync]\nroot_keys = ["{root}"]\nstate_dir = "sync-state"\n'
        '[authority]\nwebsite = "https://authority.example/"\nlegal_basis = "Act"\n'
        '[page]\nhotline = { name = "H", url = "https://hotline.example/" }\n'
        'confidential_help = [{ name = "C", url = "https://help.example/" }]\n'
    )
    assert main(["check", "--config", str(config)]) == 0
    assert "verified list: serial 1, 2 entries" in capsys.readouterr().out
    assert main(["outbox", "--config", str(config)]) == 0
    assert "no outbox yet" in capsys.readouterr().out
    config.write_text(config.read_text() + "[server]\nport = 99999\n")
    assert main(["check", "--config", str(config)]) == 2
    assert "stoppage.toml: server.port" in capsys.readouterr().err


# ---------------------------------------------------------------- fast paths against references

_LABEL = st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,8}[A-Za-z0-9_])?", fullmatch=True)
_HOSTS = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=8).map(".".join),
    st.lists(_LABEL, min_size=1, max_size=4).map(lambda x: ".".join(x) + "."),
    st.text(alphabet="abcXYZ019-_.:[]é*%", max_size=30),
)
_PATHS = st.lists(
    st.sampled_from(["a", "b.html", "..", ".", "", "%2e", "%2F", "%41", "x y", "é", "?q=1", "#f"]),
    max_size=7,
).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=400, deadline=None)
@given(_HOSTS)
def test_canonical_host_fast_path_equals_the_reference(header: str) -> None:
    from stoppage.matching import _canonical_host_slow

    assert canonical_host(header) == _canonical_host_slow(header)


@settings(max_examples=400, deadline=None)
@given(_HOSTS, _PATHS)
def test_lookup_expressions_equal_the_reference(header: str, path: str) -> None:
    from blocklist.errors import InvalidEntry
    from blocklist.urls import url_lookup_expressions
    from stoppage.matching import lookup_expressions

    host = canonical_host(header)
    if host is None:
        return
    try:
        expected = url_lookup_expressions(f"http://{host}{path}")
    except (InvalidEntry, ValueError):
        expected = []
    assert lookup_expressions(host, path) == expected


def test_prefix_index_finds_what_the_list_finds() -> None:
    from blocklist.digests import digest
    from blocklist.state import ListState

    rng = random.Random(5)
    digests = sorted({digest(str(rng.random())) for _ in range(5000)})
    digests += [b"\x00" * 32, b"\xff" * 32]
    digests.sort()
    state = ListState(b"".join(digests), b"\0" * 8 * len(digests), b"\1" * len(digests))
    matcher = Matcher(None)
    matcher.state = state
    from stoppage.matching import prefix_starts

    matcher._starts = prefix_starts(state.digests)
    probes = digests + [digest(str(rng.random())) for _ in range(2000)]
    assert [matcher.index_of(d) for d in probes] == [state.index_of(d) for d in probes]
    empty = Matcher(None)
    assert empty.index_of(digests[0]) == -1
