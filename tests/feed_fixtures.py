"""Feed providers on loopback: a file server (plain HTTP, or TLS with tls_fixtures' certificate),
and minisign-format signatures made with `cryptography` (the real `minisign` tool is used by
the differential test)."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass
class FileServer:
    """Serves `files` (name -> bytes) with ETag / If-None-Match; counts requests and 304s."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    not_modified: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(name)
        if name not in self.files:
            return web.Response(status=404)
        body = self.files[name]
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag})

    async def start(self, tls: tuple[Path, Path] | None = None) -> FileServer:
        app = web.Application()
        app.router.add_get("/{name:.+}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class MinisignKey:
    key: Ed25519PrivateKey
    key_id: bytes

    @classmethod
    def generate(cls) -> MinisignKey:
        return cls(Ed25519PrivateKey.generate(), os.urandom(8))

    @property
    def public_text(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(b"Ed" + self.key_id + raw).decode()

    def sign(self, data: bytes, comment: str = "timestamp:0", prehash: bool = True) -> bytes:
        message = hashlib.blake2b(data).digest() if prehash else data
        sig = self.key.sign(message)
        alg = b"ED" if prehash else b"Ed"
        global_sig = self.key.sign(sig + comment.encode())
        return (
            "untrusted comment: signature\n"
            + base64.b64encode(alg + self.key_id + sig).decode()
            + f"\ntrusted comment: {comment}\n"
            + base64.b64encode(global_sig).decode()
            + "\n"
        ).encode()
