#!/usr/bin/env python3
"""Generate docs/configuration.md from the pydantic models every command validates its TOML with.

    python deploy/configref.py > docs/configuration.md

tests/test_deploy.py fails when the checked-in reference differs from what this prints.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.authority.config import AuthorityConfig
from resolver.config import ResolverConfig
from resolver.rpz.config import RpzConfig
from stoppage.config import StoppageConfig
from urlproxy.config import UrlProxyConfig

FILES = [
    ("authority.toml", "blocklist init / serve", AuthorityConfig),
    ("resolver.toml", "resolver sync / serve", ResolverConfig),
    ("rpz.toml", "resolver rpz serve / export", RpzConfig),
    ("stoppage.toml", "stoppage serve", StoppageConfig),
    ("urlproxy.toml", "urlproxy serve", UrlProxyConfig),
]


def model_of(annotation: object) -> type[BaseModel] | None:
    """The Section model a field holds (directly or as `X | None`), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def type_name(annotation: object) -> str:
    """A readable type: `Annotated` metadata dropped, unions joined with `|`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        name = getattr(origin, "__name__", repr(origin).replace("typing.", ""))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def constraints(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{attr} {value}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value!r}`".replace("|", "\\|")


def section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    leaves, subs = [], []
    for name, field in model.model_fields.items():
        sub = model_of(field.annotation)
        (subs if sub else leaves).append((name, field, sub))
    if leaves:
        out.append(f"\n### `[{prefix}]`\n" if prefix else "\n### top level\n")
        out.append("| key | type | default | limits |")
        out.append("|---|---|---|---|")
        for name, field, _ in leaves:
            kind = type_name(field.annotation).replace("|", "\\|")
            out.append(f"| `{name}` | {kind} | {default_text(field)} | {constraints(field)} |")
    for name, _, sub in subs:
        assert sub is not None
        section(sub, f"{prefix}.{name}" if prefix else name, out)


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python deploy/configref.py`; do not edit by hand.",
        "Unknown keys are errors. Every error names the file and the key. Relative paths are",
        "relative to the configuration file. Commented examples live in `deploy/`.",
    ]
    for filename, commands, model in FILES:
        out.append(f"\n## `{filename}` ({commands})")
        section(model, "", out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
