"""Signed form tokens: anti-abuse for the complaint form without cookies or third parties.

A token is issued with each complaint form and carries its issue time, the blocked host, the list
entry and a random nonce, authenticated with HMAC-SHA256 under a secret that never leaves the
server (a 0600 file created on first start). On submission the token must verify, belong to the
same host, be younger than the maximum age and older than the minimum fill time. The nonce also
makes a form single-use: the outbox refuses a second complaint with the same nonce.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from blocklist.config import ConfigError

SECRET_BYTES = 32
_CONTEXT = b"cordon-stoppage-form-v1\x00"
_MAC_BYTES = 16
MAX_TOKEN_CHARS = 600


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret, creating it (mode 0600, O_EXCL) on first start; refuse a readable one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: the form-token secret is readable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"
        )
    data = path.read_bytes()
    if len(data) < SECRET_BYTES:
        raise ConfigError(f"{path}: the form-token secret is shorter than {SECRET_BYTES} bytes")
    return data


class TokenProblem(Enum):
    FORGED = "forged"  # missing, malformed, bad MAC, or issued for another host
    EXPIRED = "expired"
    TOO_FAST = "too_fast"


@dataclass(frozen=True)
class FormToken:
    issued: int
    host: str
    entry_id: int | None
    nonce: str


class TokenError(Exception):
    def __init__(self, problem: TokenProblem, token: FormToken | None = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.token = token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FormTokens:
    def __init__(
        self,
        secret: bytes,
        *,
        max_age: float,
        min_fill: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.max_age = max_age
        self.min_fill = min_fill
        self.clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, host: str, entry_id: int | None, issued: int | None = None) -> str:
        when = int(self.clock()) if issued is None else issued
        nonce = _b64(secrets.token_bytes(16))
        entry = "-" if entry_id is None else str(entry_id)
        payload = f"{when}.{entry}.{nonce}.{host}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, host: str | None) -> FormToken:
        """The token's content, or TokenError saying what is wrong with it."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TokenError(TokenProblem.FORGED)
        body, mac = token.split(".")
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise TokenError(TokenProblem.FORGED) from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise TokenError(TokenProblem.FORGED)
        try:
            when, entry, nonce, token_host = payload.decode().split(".", 3)
            parsed = FormToken(int(when), token_host, None if entry == "-" else int(entry), nonce)
        except ValueError:
            raise TokenError(TokenProblem.FORGED) from None
        if host is None or parsed.host != host:
            raise TokenError(TokenProblem.FORGED, parsed)
        age = self.clock() - parsed.issued
        if age > self.max_age or age < -60:
            raise TokenError(TokenProblem.EXPIRED, parsed)
        if age < self.min_fill:
            raise TokenError(TokenProblem.TOO_FAST, parsed)
        return parsed
