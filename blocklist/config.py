"""Loading TOML configuration into pydantic models with errors that name the file and the key."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from blocklist.domains import validate_protected_names

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a service command: a configuration error exits 2 with its message, Ctrl-C 130."""
    try:
        return func(args)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# A list of names never to block; each must be a valid domain.
ProtectedNameList = Annotated[list[str], AfterValidator(validate_protected_names)]


def _ip_addresses(values: list[str]) -> list[str]:
    for v in values:
        ipaddress.ip_address(v)
    return values


def _loopback(v: str) -> str:
    if not ipaddress.ip_address(v).is_loopback:
        raise ValueError("the metrics port is local-only: use a loopback address")
    return v


def _optional(kind: type) -> AfterValidator:
    def check(v: str) -> str:
        if v:
            kind(v)
        return v

    return AfterValidator(check)


# Shared field types of the services' configs: listen addresses, a loopback-only metrics
# address, and a stop-page address that may be left empty.
AddressList = Annotated[list[str], AfterValidator(_ip_addresses)]
LoopbackAddress = Annotated[str, AfterValidator(_loopback)]
OptionalIPv4 = Annotated[str, _optional(ipaddress.IPv4Address)]
OptionalIPv6 = Annotated[str, _optional(ipaddress.IPv6Address)]


class Section(BaseModel):
    """Base for config sections: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_config(path: Path | str, model: type[M]) -> M:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate_config(data, model, str(path), base=path.parent)


def validate_config(data: dict, model: type[M], source: str, base: Path | None = None) -> M:
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None
    resolve = getattr(config, "resolve_paths", None)
    if base is not None and resolve is not None:
        try:
            config = resolve(base)
        except ValueError as exc:  # a file the configuration names cannot be used
            raise ConfigError(f"{source}: {exc}") from None
    return config
