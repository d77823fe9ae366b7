"""The authority API over urllib, and the global options that locate it."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from blocklist.cli.errors import ApiError, CliError

DEFAULT_URL = "http://127.0.0.1:8440"


TOKEN_HINT = (
    "hint: set CORDON_TOKEN (or CORDON_TOKEN_FILE, --token, --token-file) to a valid officer token"
)


TIMEOUT = 60.0


IMPORT_TIMEOUT = 900.0


class Client:
    """A minimal JSON client for the authority API over urllib."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        timeout: float = TIMEOUT,
        raw: bytes | None = None,
    ) -> Any:
        if not self.token:
            raise CliError("no token given", 1, [TOKEN_HINT])
        url = self.url + path
        if query:
            pairs = query.items() if isinstance(query, dict) else query
            params = [(k, v) for k, v in pairs if v is not None]
            if params:
                url += "?" + urllib.parse.urlencode(params)
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if raw is not None:  # a file sent as it is (feed import)
            data = raw
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None or method == "POST":
            data = json.dumps(body if body is not None else {}, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise CliError(f"cannot reach the authority at {self.url}: {text}") from None
        except TimeoutError:
            raise CliError(
                f"the authority at {self.url} did not answer within {timeout:.0f} seconds"
            ) from None
        except OSError as exc:  # connection reset, remote closed, ...
            text = exc.strerror or str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the authority at {self.url}: {text}") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CliError(
                f"the authority at {self.url} answered with something not JSON"
            ) from None

    def _api_error(self, exc: urllib.error.HTTPError) -> ApiError:
        try:
            data = json.loads(exc.read())
            if not isinstance(data, dict):
                raise ValueError
        except (ValueError, OSError):
            data = {"error": f"http_{exc.code}", "message": f"HTTP {exc.code} {exc.reason}"}
        hints = [TOKEN_HINT] if exc.code == 401 else []
        return ApiError(exc.code, data, hints)


def client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token)


def resolve_globals(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("CORDON_URL") or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CliError(f"--url {url!r} must start with http:// or https://", 2)
    args.url = url
    token = args.token
    token_file = args.token_file
    if not token and not token_file:
        token = os.environ.get("CORDON_TOKEN") or None
        token_file = None if token else os.environ.get("CORDON_TOKEN_FILE") or None
    if not token and token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the token file {token_file}: {exc}", 2) from None
        if not token:
            raise CliError(f"the token file {token_file} is empty", 2)
    args.token = token.strip() if token else None
