"""What commands without the API share: the config, the database, secret files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from blocklist.cli.errors import CliError


def load_authority_config(path: str):
    from blocklist.authority.config import AuthorityConfig
    from blocklist.config import ConfigError, load_config

    try:
        return load_config(Path(path), AuthorityConfig)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def open_store(path: Path):
    from blocklist.authority.store import Store

    try:
        return Store(path)
    except (sqlite3.Error, RuntimeError) as exc:
        raise CliError(f"cannot open the database {path}: {exc}") from None


def write_secret(path: Path, text: str) -> None:
    """Create `path` with mode 0600 (refusing to overwrite) and write `text` to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
