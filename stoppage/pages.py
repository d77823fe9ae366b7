"""Rendering: each page kind rendered once per language and list version, then filled per request.

A page's template is rendered with a marker in each place a per-request value goes (the host,
the entry reference, the form token, paths). The result is split at the markers into byte
fragments; a request joins the fragments with its own values, HTML-escaped by markupsafe exactly
as Jinja's autoescape would, so a marker may sit in text or in a quoted attribute alike. Nothing
is cached per host: the cache holds (page kind, language) pairs and is rebuilt when a new list
(a new version, maybe a new authority name) is loaded.

Texts from the configuration that have no translation for the page's language fall back to
English, then to the default language, and are marked with their own `lang` so that screen
readers switch voice.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from stoppage.config import Localized, StoppageConfig, localize_lang
from stoppage.i18n import Catalogue, Translator
from stoppage.views import ROLES

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
CSS_FILE = PACKAGE_DIR / "static" / "style.css"

# Private-use characters: never in a template, a catalogue or (refused by `_clean`) a config text.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_OPEN}([a-z_]+){_CLOSE}")
# What markupsafe.escape replaces; a value without any (a plain host name) is copied as it is.
_SPECIAL = re.compile("[&<>\"']")


def slot(name: str) -> str:
    """The marker a template receives in place of a per-request value."""
    return f"{_OPEN}{name}{_CLOSE}"


def bdi_ltr(text: str) -> Markup:
    # Host names, codes and dates read left to right inside right-to-left text.
    return Markup('<bdi dir="ltr">{}</bdi>').format(text)


def isolated(text: str, lang: str = "") -> Markup:
    # Names and contacts from the configuration keep their own direction inside any page.
    if not text:
        return Markup("")
    if lang:
        return Markup('<bdi lang="{}">{}</bdi>').format(lang, text)
    return Markup("<bdi>{}</bdi>").format(text)


def in_language(text: str, lang: str) -> Markup:
    return Markup('<span lang="{}">{}</span>').format(lang, text) if lang else escape(text)


@dataclass(frozen=True, slots=True)
class Prerendered:
    """A page split at its markers: len(parts) == len(slots) + 1."""

    parts: tuple[bytes, ...]
    slots: tuple[str, ...]

    @classmethod
    def split(cls, html: str) -> Prerendered:
        pieces = _MARK.split(html)
        return cls(tuple(p.encode("utf-8") for p in pieces[0::2]), tuple(pieces[1::2]))

    def fill(self, values: Mapping[str, str]) -> bytes:
        parts = self.parts
        out = [parts[0]]
        for i, name in enumerate(self.slots, 1):
            value = values[name]
            if _SPECIAL.search(value) is not None:
                value = str(escape(value))
            out.append(value.encode("utf-8"))
            out.append(parts[i])
        return b"".join(out)


class Renderer:
    """Templates, catalogues and the deployment's texts, turned into page bytes."""

    def __init__(
        self,
        config: StoppageConfig,
        catalogues: dict[str, Catalogue],
        translators: dict[str, Translator],
        complaints_enabled: bool,
    ) -> None:
        self.config = config
        page = config.page
        self.languages = list(page.languages)
        self.default_language = page.fallback_language
        self.translators = translators
        self.language_links = [{"code": c, "name": catalogues[c].name} for c in self.languages]
        self.complaints_enabled = complaints_enabled
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
        self.list_authority = ""
        self.serial: int | None = None
        self._contexts: dict[str, dict[str, Any]] = {}
        self._pages: dict[tuple[str, str], Prerendered] = {}

    def set_list(self, authority: str, serial: int | None) -> None:
        self.list_authority = authority
        self.serial = serial
        self._contexts = {}
        self._pages = {}

    def text(self, value: Localized, lang: str) -> tuple[str, str]:
        """A configured text for `lang`, and the language to mark it with ("" = the page's)."""
        text, code = localize_lang(value, lang, self.default_language)
        return text, ("" if code in ("", lang) else code)

    def base_context(self, lang: str) -> dict[str, Any]:
        ctx = self._contexts.get(lang)
        if ctx is not None:
            return ctx
        cfg = self.config

        def marked(value: Localized) -> Markup:
            return in_language(*self.text(value, lang))

        def named(value: Localized) -> Markup:
            return isolated(*self.text(value, lang))

        def link(item: Any) -> dict[str, Any]:
            name, name_lang = self.text(item.name, lang)
            note, note_lang = self.text(item.note, lang)
            return {"url": item.url, "name": name, "name_lang": name_lang, "note": note,
                    "note_lang": note_lang}  # fmt: skip

        tr = self.translators[lang]
        website = cfg.authority.website
        authority = named(cfg.authority.name)
        if not authority:
            authority = isolated(self.list_authority or website.split("://", 1)[-1].rstrip("/"))
        ctx = {
            "t": tr,
            "lang": lang,
            "dir": tr.direction,
            "css": self.css,
            "languages": self.language_links,
            "switch_base": "?",
            "authority": authority,
            "authority_contact": named(cfg.authority.contact),
            "authority_website": website,
            "authority_website_label": website.split("://", 1)[-1].rstrip("/"),
            "operator": named(cfg.operator.name),
            "operator_contact": named(cfg.operator.contact),
            "legal_basis": marked(cfg.authority.legal_basis),
            "complaint_policy": marked(cfg.authority.complaint_policy),
            "hotline": link(cfg.page.hotline),
            "confidential_help": [link(x) for x in cfg.page.confidential_help],
            "victim_help": [link(x) for x in cfg.page.victim_help],
            "complaints_enabled": self.complaints_enabled,
            "status_url": cfg.status_url,
        }
        self._contexts[lang] = ctx
        return ctx

    def render(self, template: str, lang: str, **extra: Any) -> bytes:
        ctx = dict(self.base_context(lang))
        ctx.update(extra)
        return self.env.get_template(template).render(ctx).encode("utf-8")

    def prerendered(self, kind: str, lang: str) -> Prerendered:
        key = (kind, lang)
        page = self._pages.get(key)
        if page is None:
            template, extra = self._kind(kind, lang)
            html = self.render(template, lang, **extra).decode("utf-8")
            page = self._pages[key] = Prerendered.split(html)
        return page

    def fill(self, kind: str, lang: str, values: Mapping[str, str]) -> bytes:
        return self.prerendered(kind, lang).fill(values)

    def _kind(self, kind: str, lang: str) -> tuple[str, dict[str, Any]]:
        show_entry = self.config.page.show_entry_id
        if kind == "neutral":
            return "neutral.html", {}
        if kind in ("blocked", "blocked_url"):
            is_url = kind == "blocked_url"
            return "blocked.html", {
                "host": bdi_ltr(slot("host")),
                "is_url": is_url,
                "entry_id": slot("entry") if show_entry else None,
                "serial": self.serial,
                "switch_base": slot("switch_base") if is_url else "?",
                "complaint_href": slot("complaint_href") if is_url else f"/complaint?lang={lang}",
            }
        if kind == "form":
            return "form.html", self.form_context(
                lang, bdi_ltr(slot("host")), slot("token"), switch_base=slot("switch_base")
            )
        raise KeyError(f"no page kind {kind!r}")

    def form_context(
        self,
        lang: str,
        host: str,
        token: str,
        *,
        values: Mapping[str, str] | None = None,
        errors: list[Markup] | None = None,
        invalid: tuple[str, ...] = (),
        switch_base: str = "?",
    ) -> dict[str, Any]:
        form = {"role": "", "reason": "", "contact": "", "language": lang}
        form.update(values or {})
        c = self.config.complaints
        return {
            "host": host,
            "token": token,
            "roles": ROLES,
            "form": form,
            "errors": errors or [],
            "invalid": invalid,
            "max_reason": c.max_reason_chars,
            "max_contact": c.max_contact_chars,
            "switch_base": switch_base,
        }


def missing_texts(config: StoppageConfig) -> list[tuple[str, str, str]]:
    """(language, config key, language shown instead) for each text lacking a translation."""
    cfg = config
    texts: list[tuple[str, Localized]] = [
        ("authority.name", cfg.authority.name),
        ("authority.contact", cfg.authority.contact),
        ("authority.legal_basis", cfg.authority.legal_basis),
        ("authority.complaint_policy", cfg.authority.complaint_policy),
        ("operator.name", cfg.operator.name),
        ("operator.contact", cfg.operator.contact),
        ("page.hotline.name", cfg.page.hotline.name),
        ("page.hotline.note", cfg.page.hotline.note),
    ]
    for group in ("confidential_help", "victim_help"):
        for i, item in enumerate(getattr(cfg.page, group)):
            texts.append((f"page.{group}[{i}].name", item.name))
            texts.append((f"page.{group}[{i}].note", item.note))
    out = []
    for lang in cfg.page.languages:
        for key, value in texts:
            if not isinstance(value, dict) or not value:
                continue
            _text, code = localize_lang(value, lang, cfg.page.fallback_language)
            if code != lang:
                out.append((lang, key, code))
    return out
