"""Running the authority API: `blocklist serve --config authority.toml`."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from blocklist.authority.api import make_app
from blocklist.authority.config import AuthorityConfig
from blocklist.authority.console.web import mount
from blocklist.authority.service import Authority
from blocklist.config import load_config
from blocklist.logs import setup_logging

log = logging.getLogger("cordon.authority")


def serve(config_path: Path, host: str | None = None, port: int | None = None) -> None:
    config = load_config(config_path, AuthorityConfig)
    setup_logging()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; tolerate odd platforms
        pass
    auth = Authority(config)
    host = host or config.api.host
    port = port or config.api.port
    log.info("authority API listening", extra={"fields": {"host": host, "port": port}})
    app = make_app(auth)
    mount(app, auth)
    web.run_app(app, host=host, port=port, access_log=None, print=None)
