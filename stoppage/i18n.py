"""Translation catalogues and language negotiation.

A catalogue is one JSON file per language, `<code>.json`, mapping message keys to text, plus a
`_meta` object with the language's own name and its writing direction. The shipped catalogues live
in `stoppage/locales/`; a deployment adds languages, or overrides single messages of a shipped
language, with files of the same shape in `[page] locales_dir` — no code changes.

Messages are plain text with `{name}` placeholders. They are HTML-escaped when rendered, and so
are the values put into them, so a catalogue cannot inject markup. A message that states a number
is an object keyed by CLDR plural category (`zero`, `one`, `two`, `few`, `many`, `other`; `other`
is required), chosen for the value of its `{count}` by Babel's CLDR rules for the language —
Arabic needs all six, French counts 0 and 1 as `one`, Swahili has no plural in these nouns.

Language negotiation: Accept-Language is ordered by q-value, then each tag is matched with
Babel's `negotiate_locale` (exact, then the primary subtag: fr-CA -> fr), and a plain tag may
pick a configured regional variant (pt -> pt-br).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.core import negotiate_locale
from markupsafe import Markup, escape

from blocklist.config import ConfigError
from stoppage.config import LANGUAGE_CODE

SHIPPED_DIR = Path(__file__).resolve().parent / "locales"
# Every shipped catalogue has every key; a deployment's new language may leave some out, and
# those fall back to the default language, then to English.
REFERENCE_LANGUAGE = "en"
PLURAL_CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})
Message = str | dict[str, str]


@dataclass(frozen=True)
class Catalogue:
    code: str
    name: str  # the language's own name, for the switcher
    direction: str  # "ltr" or "rtl"
    messages: dict[str, Message]
    sources: tuple[str, ...]


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON catalogue: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a catalogue is a JSON object of messages")
    for key, value in data.items():
        if key == "_meta":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: _meta: must be an object with name and dir")
            continue
        if isinstance(value, dict):
            unknown = sorted(set(value) - PLURAL_CATEGORIES)
            if unknown or "other" not in value:
                raise ConfigError(
                    f"{path}: {key}: a plural message is an object of CLDR categories "
                    f"(zero, one, two, few, many, other; 'other' required): "
                    f"{unknown or 'other is missing'}"
                )
            texts = list(value.values())
        else:
            texts = [value]
        for text in texts:
            if not isinstance(text, str):
                raise ConfigError(f"{path}: {key}: a message must be a string")
            try:
                text.format_map(_AnyArgs())
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"{path}: {key}: bad placeholder: {exc}") from None
    return data


class _AnyArgs(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _load_dir(directory: Path, into: dict[str, list[tuple[Path, dict]]]) -> None:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: catalogue directory does not exist")
    for path in sorted(directory.glob("*.json")):
        code = path.stem
        if not LANGUAGE_CODE.match(code):
            raise ConfigError(
                f"{path}: file name must be a language code like fr.json or pt-br.json"
            )
        into.setdefault(code, []).append((path, _read(path)))


def load_catalogues(
    languages: list[str], extra_dir: Path | None = None, source: str = "configuration"
) -> dict[str, Catalogue]:
    """The catalogues of `languages`: shipped ones, then the deployment's on top of them."""
    found: dict[str, list[tuple[Path, dict]]] = {}
    _load_dir(SHIPPED_DIR, found)
    if extra_dir is not None:
        _load_dir(extra_dir, found)
    reference = dict(found[REFERENCE_LANGUAGE][0][1])
    out: dict[str, Catalogue] = {}
    for code in languages:
        layers = found.get(code)
        if not layers:
            where = f"{SHIPPED_DIR}" + (f" or {extra_dir}" if extra_dir else "")
            raise ConfigError(
                f"{source}: page.languages: no catalogue for {code!r} (looked for {code}.json "
                f"in {where})"
            )
        merged: dict[str, Message] = {}
        meta: dict = {}
        for _path, data in layers:
            meta.update(data.get("_meta", {}))
            merged.update({k: v for k, v in data.items() if k != "_meta"})
        last = layers[-1][0]
        name = meta.get("name")
        direction = meta.get("dir", "ltr")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{last}: _meta.name: the language's own name is required")
        if direction not in ("ltr", "rtl"):
            raise ConfigError(f"{last}: _meta.dir: must be 'ltr' or 'rtl'")
        unknown = sorted(set(merged) - set(reference))
        if unknown:
            raise ConfigError(f"{last}: {unknown[0]}: unknown message key")
        out[code] = Catalogue(code, name, direction, merged, tuple(str(p) for p, _ in layers))
    return out


def plural_rule(code: str) -> Callable[[int], str]:
    """The CLDR plural category function of a language (English rules if Babel lacks it)."""
    try:
        return Locale.parse(code.replace("-", "_")).plural_form
    except (UnknownLocaleError, ValueError):
        return Locale("en").plural_form


class Translator:
    """Messages of one language with fallbacks, HTML-escaped, placeholders filled and escaped."""

    def __init__(self, catalogue: Catalogue, fallbacks: list[Catalogue]) -> None:
        self.catalogue = catalogue
        self.code = catalogue.code
        self.direction = catalogue.direction
        self.plural = plural_rule(catalogue.code)
        self._chain = [(catalogue.code, catalogue.messages, self.plural)]
        self._chain += [(c.code, c.messages, plural_rule(c.code)) for c in fallbacks]

    def lookup(self, key: str, count: int | None = None) -> tuple[str, str]:
        """The message text and the language it comes from."""
        for code, messages, plural in self._chain:
            text = messages.get(key)
            if isinstance(text, dict):
                category = plural(count) if count is not None else "other"
                return text.get(category, text["other"]), code
            if text is not None:
                return text, code
        raise KeyError(f"no message {key!r}")

    def raw(self, key: str, count: int | None = None) -> str:
        return self.lookup(key, count)[0]

    def __call__(self, key: str, **values: object) -> Markup:
        """The message as HTML text; one taken from a fallback language is marked with its lang."""
        count = values.get("count")
        text, code = self.lookup(key, count if isinstance(count, int) else None)
        html = Markup(escape(text)).format(**values) if values else escape(text)
        if code != self.code:
            return Markup('<span lang="{}">{}</span>').format(code, html)
        return html

    def bare(self, key: str) -> Markup:
        """The message for an attribute or the <title>, where markup cannot go."""
        return escape(self.raw(key))

    def missing(self) -> list[str]:
        """Keys this language takes from a fallback."""
        return sorted(set().union(*(m for _, m, _ in self._chain[1:])) - set(self._chain[0][1]))

    def plain(self, key: str, **values: object) -> str:
        count = values.get("count")
        return self.raw(key, count if isinstance(count, int) else None).format(**values)


def parse_accept_language(header: str, limit: int = 32) -> list[str]:
    """Language tags by preference (q-value, then order), lowercase, without q=0 ones."""
    tags: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:limit]):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        if not tag:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if q > 0:
            tags.append((-q, i, tag))
    return [tag for _, _, tag in sorted(tags)]


def negotiate(header: str, available: list[str], default: str) -> str:
    """The best of `available` for an Accept-Language header."""
    if not header:
        return default
    primaries: dict[str, str] = {}
    for code in available:
        primaries.setdefault(code.split("-")[0], code)
    for tag in parse_accept_language(header):
        if tag == "*":
            return default
        found = negotiate_locale([tag], available, sep="-")
        if found is not None:
            return found.lower()
        # "pt" -> a configured "pt-br" when there is no plain "pt".
        primary = tag.split("-")[0]
        if primary in primaries:
            return primaries[primary]
    return default
