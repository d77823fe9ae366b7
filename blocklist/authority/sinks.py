"""Publication sinks: push the publication directory to a static web root or an S3 bucket.

A CDN or a plain web server can then serve the artefacts to every ASP; nothing on it needs to
be trusted (ASPs verify everything), but the order of the pushes matters for availability:

- Commit order: the snapshot and deltas a notification names are pushed (and confirmed) before
  the notification itself, so no ASP ever reads a notification whose files are not there yet.
- Deferred deletes: a file no longer named is deleted only once `cache_seconds` (the longest a
  cache in front may keep serving an older notification, plus a margin) have passed since it
  stopped being named, so a cached older notification never points at deleted files.
- Only the editions listed are pushed: by default the hashed one. The plain edition names the
  listed addresses and must never go to a public host.

`Pusher.push()` is idempotent and safe to call at any time (after each commit, on a timer, at
start-up): it reads the local notification, pushes what is missing, then the notification.
Its small state file records what the sink holds and since when a file is unnamed, so deferred
deletes survive a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import Field, model_validator

from blocklist.config import Section
from blocklist.files import fsync_dir, write_atomic
from blocklist.notification import Notification
from signing import HEADER_SIZE, SIGNATURE_SIZE, decode_bundle

log = logging.getLogger("cordon.sinks")
NOTIFICATION_FILE = "notification.bin"
MAX_ATTEMPTS = 5


class SinkError(Exception):
    """The sink refused or could not be reached; the push is retried later."""


class Sink(Protocol):
    name: str

    def put(self, path: str, data: bytes) -> None: ...

    def delete(self, path: str) -> None: ...


class WebRootSink:
    """A directory a web server serves (nginx, Apache, a CDN origin): atomic renames only."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = f"webroot:{self.root}"

    def _path(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if self.root.resolve() not in target.parents:
            raise SinkError(f"{path!r} is outside the web root")
        return target

    def put(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # World-readable: the web server runs as another user; nothing here is secret.
        write_atomic(target, data, mode=0o644)

    def delete(self, path: str) -> None:
        target = self._path(path)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
            fsync_dir(target.parent)


class S3Sink:
    """An S3-compatible bucket (AWS, MinIO, Ceph RGW, Garage…), signed with AWS SigV4."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        prefix: str = "",
        timeout: float = 30,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.prefix = prefix.strip("/")
        self.timeout = timeout
        self.name = f"s3:{self.endpoint}/{bucket}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _request(self, method: str, path: str, data: bytes = b"", headers: dict | None = None):
        key = urllib.parse.quote(self._key(path), safe="/-_.~")
        url = f"{self.endpoint}/{self.bucket}/{key}"
        all_headers = sigv4_headers(
            method,
            url,
            headers or {},
            data,
            self.access_key,
            self.secret_key,
            self.region,
            dt.datetime.now(dt.UTC),
        )
        del all_headers["host"]
        req = urllib.request.Request(url, data=data or None, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            if method == "DELETE" and exc.code == 404:
                return 404
            body = exc.read(300).decode("utf-8", "replace")
            raise SinkError(f"{method} {url} answered {exc.code}: {body}") from None
        except OSError as exc:
            raise SinkError(f"{method} {url} failed: {exc}") from None

    def put(self, path: str, data: bytes) -> None:
        cache = "max-age=60" if path.endswith(NOTIFICATION_FILE) else "max-age=31536000, immutable"
        self._request(
            "PUT",
            path,
            data,
            {"content-type": "application/octet-stream", "cache-control": cache},
        )

    def delete(self, path: str) -> None:
        self._request("DELETE", path)


def sigv4_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    access_key: str,
    secret_key: str,
    region: str,
    when: dt.datetime,
) -> dict[str, str]:
    """The request headers with an AWS Signature Version 4 `authorization` (service "s3").
    Pure: the same inputs give the same bytes (tested against AWS's published example)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = when.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    signed = {
        "host": parts.netloc,
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
        **{k.lower(): v for k, v in headers.items()},
    }
    names = ";".join(sorted(signed))
    query = "&".join(
        sorted(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
    )
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            query,
            "".join(f"{k}:{' '.join(signed[k].split())}\n" for k in sorted(signed)),
            names,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    return signed


def named_files(notification_bytes: bytes) -> tuple[Notification, list[str]]:
    """The files a notification names (snapshot first, then deltas). Not verified: the
    authority reads its own, just-signed file."""
    signed = decode_bundle(notification_bytes, len(notification_bytes))[1]
    note = Notification.model_validate_json(signed[HEADER_SIZE:-SIGNATURE_SIZE])
    return note, [note.snapshot.uri, *(d.uri for d in note.deltas)]


@dataclass
class PushReport:
    pushed: list[str]
    deleted: list[str]
    serials: dict[str, int]


class Pusher:
    """Mirror a publication directory into one sink, in commit order (see module doc)."""

    def __init__(
        self,
        publication_dir: Path,
        sink: Sink,
        *,
        editions: Sequence[str] = ("hashed",),
        cache_seconds: int = 300,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(publication_dir)
        self.sink = sink
        self.editions = list(editions)
        self.cache_seconds = cache_seconds
        safe = "".join(c if c.isalnum() else "_" for c in sink.name)[-80:]
        self.state_file = state_file or self.dir / f".sink-{safe}.json"
        self.clock = clock
        self._lock = threading.Lock()
        self._state = self._load()

    def _load(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"files": {}, "notifications": {}}
        except (OSError, ValueError) as exc:
            # Forgetting what was pushed only costs pushes again; never a wrong delete.
            log.warning(
                "sink state %s unreadable (%s); pushing everything again", self.state_file, exc
            )
            return {"files": {}, "notifications": {}}
        return state

    def _save(self) -> None:
        data = json.dumps(self._state, sort_keys=True).encode()
        write_atomic(self.state_file, data, mode=0o600)

    def push(self) -> PushReport:
        """Bring the sink up to the local publication. Raises SinkError; retry later."""
        with self._lock:
            report = PushReport([], [], {})
            for edition in self.editions:
                self._push_edition(edition, report)
            self._collect(report)
            self._save()
            return report

    def _push_edition(self, edition: str, report: PushReport) -> None:
        files: dict[str, dict] = self._state["files"]
        for _attempt in range(MAX_ATTEMPTS):
            try:
                blob = (self.dir / edition / NOTIFICATION_FILE).read_bytes()
            except FileNotFoundError:
                return  # nothing published yet
            note, names = named_files(blob)
            try:
                for name in names:
                    path = f"{edition}/{name}"
                    entry = files.get(path)
                    if entry is None or entry.get("size") is None:
                        data = (self.dir / edition / name).read_bytes()
                        self.sink.put(path, data)  # before the notification that names it
                        files[path] = {"size": len(data), "unnamed_since": None}
                        report.pushed.append(path)
                    files[path]["unnamed_since"] = None
            except FileNotFoundError:
                continue  # collected by a newer publication meanwhile: read it again
            key = f"{edition}/{NOTIFICATION_FILE}"
            digest = hashlib.sha256(blob).hexdigest()
            if self._state["notifications"].get(key) != digest:
                self.sink.put(key, blob)
                self._state["notifications"][key] = digest
                report.pushed.append(key)
            report.serials[edition] = note.serial
            now = self.clock()
            for path, entry in files.items():
                unnamed = path.startswith(f"{edition}/") and path.split("/", 1)[1] not in names
                if unnamed and entry["unnamed_since"] is None:
                    entry["unnamed_since"] = now
            return
        raise SinkError(f"the {edition} publication kept changing while it was pushed")

    def _collect(self, report: PushReport) -> None:
        files: dict[str, dict] = self._state["files"]
        now = self.clock()
        for path in sorted(files):
            since = files[path]["unnamed_since"]
            if since is not None and now - since >= self.cache_seconds:
                self.sink.delete(path)
                del files[path]
                report.deleted.append(path)


class BackgroundPusher:
    """Runs `Pusher.push` in a thread after each commit (and retries failures), so a slow
    sink never delays a publication."""

    def __init__(self, pusher: Pusher, retry_seconds: float = 10) -> None:
        self.pusher = pusher
        self.retry_seconds = retry_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.last_report: PushReport | None = None
        self.pushes = 0
        self._thread = threading.Thread(target=self._run, name="cordon-sink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.retry_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.last_report = self.pusher.push()
                self.last_error = None
                self.pushes += 1
            except (SinkError, OSError, ValueError) as exc:
                self.last_error = str(exc)
                log.warning("push to %s failed: %s", self.pusher.sink.name, exc)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)


class SinkSection(Section):
    """One `[[publication.sinks]]` table of authority.toml."""

    kind: Literal["webroot", "s3"]
    # webroot: the directory a web server (or a CDN origin) serves.
    path: Path | None = None
    # s3: an S3-compatible bucket; the secret is read from a file (0600), never from the TOML.
    endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None
    bucket: str = ""
    prefix: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key_file: Path | None = None
    # Never "plain" on a public host: the plain edition names every listed address.
    editions: list[Literal["hashed", "plain"]] = Field(default_factory=lambda: ["hashed"])
    # The longest a cache in front may serve an old notification (its max-age plus a margin):
    # files it names are deleted only this long after they stop being named.
    cache_seconds: Annotated[int, Field(ge=0)] = 300

    @model_validator(mode="after")
    def _complete(self) -> SinkSection:
        if self.kind == "webroot" and self.path is None:
            raise ValueError("a webroot sink needs path")
        if self.kind == "s3":
            missing = [
                name
                for name in ("endpoint", "bucket", "access_key", "secret_key_file")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"an s3 sink needs {', '.join(missing)}")
        return self

    def build(self, publication_dir: Path) -> Pusher:
        sink: Sink
        if self.kind == "webroot":
            assert self.path is not None
            sink = WebRootSink(self.path)
        else:
            assert self.secret_key_file is not None and self.endpoint is not None
            secret = self.secret_key_file.read_text().strip()
            sink = S3Sink(
                self.endpoint,
                self.bucket,
                self.access_key,
                secret,
                region=self.region,
                prefix=self.prefix,
            )
        return Pusher(
            publication_dir, sink, editions=self.editions, cache_seconds=self.cache_seconds
        )
